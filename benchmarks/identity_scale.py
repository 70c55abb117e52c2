"""Identity resolution at scale: simulate, import, then time a full resolve and one incremental event.

Prints the number of people, events and identifiers, the seconds of the full resolve and of each
of its phases (reading the log into links, matching, components, splitting over-limit components,
naming persons), the peak memory of this process, and the time to fold in one new event incrementally:
the first update after a full resolve (which also builds the graph's lookup indexes) and the next one.

Large populations are simulated in shards of ``--shard`` people, each its own world with its own
seed and its own range of person numbers, so identifiers, till receipts and email addresses do not
collide across shards; they are imported one after another and their files deleted, so memory and
disk stay bounded. With ``--keep DIR`` the imported log stays in DIR and a later run
with the same DIR only resolves again.

    python benchmarks/identity_scale.py [--people 100000] [--days 90] [--shard 100000] [--keep DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from omnithread.config import Settings
from omnithread.identity import IdentityConfig, resolve_identities, update_identities
from omnithread.sim import WorldConfig, simulate
from omnithread.workspace import Workspace


def build(data_dir: Path, people: int, days: int, shard: int, scratch: Path) -> dict:
    """Simulate ``people`` in shards and import them into ``data_dir``; returns counts and seconds."""
    done = data_dir / "built.json"
    if done.exists():
        return json.loads(done.read_text())
    simulated = imported = 0.0
    events = 0
    with Workspace(Settings(data_dir=data_dir)) as ws:
        for index, start in enumerate(range(0, people, shard)):
            size = min(shard, people - start)
            world = scratch / f"world{index}"
            started = time.perf_counter()
            manifest = simulate(
                WorldConfig(people=size, days=days, products=2_000, seed=7 + index, first_person=start), world
            )
            simulated += time.perf_counter() - started
            started = time.perf_counter()
            events += ws.ingestor().ingest_paths(manifest["sources"]).accepted
            imported += time.perf_counter() - started
            shutil.rmtree(world)
            print(f"shard {index + 1}: {start + size:,} people, {events:,} events", file=sys.stderr, flush=True)
    facts = {"events": events, "simulate_s": round(simulated, 1), "import_s": round(imported, 1)}
    done.write_text(json.dumps(facts))
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--shard", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="data directory to build the log in (or reuse) and keep")
    parser.add_argument(
        "--memory-limit",
        help="cap the engine's memory for the resolve (e.g. 6GB; default: "
        "OMNITHREAD_MEMORY_LIMIT, else the engine's own)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.keep or Path(scratch) / "data"
        facts = build(data_dir, args.people, args.days, args.shard, Path(scratch))
        with Workspace(Settings.from_env(data_dir, memory_limit=args.memory_limit)) as ws:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            report = resolve_identities(ws.engine, ws.pseudonymiser, IdentityConfig())
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            timings = []
            for n in range(2):  # the first update after a full resolve also builds the lookup indexes
                event = {
                    "type": "track",
                    "event": "Order Completed",
                    "messageId": f"scale-incremental-{time.time_ns()}",
                    "anonymousId": f"till:S01:SCALE{n}",
                    "timestamp": "2026-10-01T10:00:00Z",
                    "context": {"channel": "store", "store_id": "S01"},
                    "properties": {
                        "order_id": f"SCALE{n}",
                        "products": [{"product_id": "P00001"}],
                        "payment_token": "tok_scale_benchmark",
                    },
                }
                path = Path(scratch) / f"one{n}.jsonl"
                path.write_bytes(orjson.dumps(event) + b"\n")
                ws.ingestor().ingest_paths([path])
                started = time.perf_counter()
                update_identities(ws.engine, ws.pseudonymiser)
                timings.append(time.perf_counter() - started)
            memory_limit = ws.engine.scalar("SELECT current_setting('memory_limit')")
    result = {
        "people": args.people,
        "events": facts["events"],
        "identifiers": sum(report.identifiers.values()),
        "persons": report.persons,
        "links": report.links_kept,
        "probabilistic_links": report.probabilistic_links,
        "simulate_s": facts["simulate_s"],
        "import_s": facts["import_s"],
        "resolve_s": round(report.seconds, 1),
        "resolve_phases_s": {name: round(value, 1) for name, value in report.phases.items()},
        "peak_memory_gb": round(max(before, peak) / 1024 / 1024, 2),
        "engine_memory_limit": memory_limit,
        "first_incremental_event_ms": round(timings[0] * 1000, 1),
        "next_incremental_event_ms": round(timings[1] * 1000, 1),
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
