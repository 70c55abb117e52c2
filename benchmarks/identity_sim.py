"""Identity resolution against the simulated retailer's truth, at default and at harder noise.

Prints, per setting, pairwise and cluster precision, recall and F1, the over-merge
rate (persons holding more than one true person), the under-merge rate (true
persons split over several), and the time to resolve.

    python benchmarks/identity_sim.py [--people 3000] [--days 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from omnithread.config import Settings
from omnithread.identity import evaluate_against_truth, resolve_identities
from omnithread.sim import WorldConfig, simulate
from omnithread.workspace import Workspace


def measure(config: WorldConfig) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        manifest = simulate(config, Path(scratch) / "world")
        with Workspace(Settings(data_dir=Path(scratch) / "data")) as ws:
            ws.ingestor().ingest_paths(manifest["sources"])
            report = resolve_identities(ws.engine, ws.pseudonymiser)
            result = evaluate_against_truth(ws.engine, ws.pseudonymiser, Path(scratch) / "world" / "truth")
    return {
        **result,
        "resolve_seconds": round(report.seconds, 2),
        "links_dropped": sum(report.links_dropped.values()),
        "blocked_identifiers": report.blocked_identifiers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=3_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {
        "default": measure(WorldConfig.demo(people=args.people, days=args.days)),
        "hard": measure(WorldConfig.hard(people=args.people, days=args.days)),
    }
    if args.json:
        json.dump(results, sys.stdout)
        sys.stdout.write("\n")
        return
    print(f"Identity resolution on the simulated retailer ({args.people:,} people, {args.days} days)")
    print(
        f"{'noise':8}{'pair P':>8}{'pair R':>8}{'pair F1':>8}{'clus P':>8}{'clus R':>8}{'clus F1':>8}"
        f"{'over':>8}{'under':>8}{'seconds':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:8}{r['pairwise']['precision']:>8.3f}{r['pairwise']['recall']:>8.3f}{r['pairwise']['f1']:>8.3f}"
            f"{r['cluster']['precision']:>8.3f}{r['cluster']['recall']:>8.3f}{r['cluster']['f1']:>8.3f}"
            f"{r['over_merge_rate']:>8.3f}{r['under_merge_rate']:>8.3f}{r['resolve_seconds']:>9.2f}"
        )


if __name__ == "__main__":
    main()
