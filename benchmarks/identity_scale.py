"""Identity resolution at scale: simulate, import, then time a full resolve and one incremental event.

Prints the number of people, events and identifiers, the seconds and peak memory (this process)
of the full resolve, and the time to fold in one new event incrementally.

    python benchmarks/identity_scale.py [--people 100000] [--days 90] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson

from omnithread.config import Settings
from omnithread.identity import IdentityConfig, resolve_identities, update_identities
from omnithread.sim import WorldConfig, simulate
from omnithread.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        manifest = simulate(WorldConfig(people=args.people, days=args.days, products=2_000), Path(scratch) / "w")
        simulated = time.perf_counter() - started
        with Workspace(Settings(data_dir=Path(scratch) / "data")) as ws:
            started = time.perf_counter()
            ingest = ws.ingestor().ingest_paths(manifest["sources"])
            imported = time.perf_counter() - started
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            report = resolve_identities(ws.engine, ws.pseudonymiser, IdentityConfig())
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            event = {"type": "track", "event": "Order Completed", "messageId": "scale-incremental-1",
                     "anonymousId": "till:S01:SCALE1", "timestamp": "2026-10-01T10:00:00Z",
                     "context": {"channel": "store", "store_id": "S01"},
                     "properties": {"order_id": "SCALE1", "products": [{"product_id": "P00001"}],
                                    "payment_token": "tok_scale_benchmark"}}
            path = Path(scratch) / "one.jsonl"
            path.write_bytes(orjson.dumps(event) + b"\n")
            ws.ingestor().ingest_paths([path])
            started = time.perf_counter()
            update_identities(ws.engine, ws.pseudonymiser)
            incremental = time.perf_counter() - started
    result = {
        "people": args.people, "events": ingest.accepted, "identifiers": sum(report.identifiers.values()),
        "persons": report.persons, "links": report.links_kept, "simulate_s": round(simulated, 1),
        "import_s": round(imported, 1), "resolve_s": round(report.seconds, 1),
        "peak_memory_gb": round(max(before, peak) / 1024 / 1024, 2), "incremental_one_event_ms": round(incremental * 1000, 1),
        "goal": {"resolve_s_for_1m_people": 120, "peak_memory_gb": 8},
    }
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    for key, value in result.items():
        print(f"{key:28}{value}")


if __name__ == "__main__":
    main()
