"""bought_together: today's co-purchase counts against association-rule rankings, on held-out orders.

The demo's simulated retailer (or ``--people``/``--days``) is imported; each ranking learns from the orders
before the log's last ``--holdout`` days and is asked, for every held-out order with two products or more,
given one of its products, for its top ``--k``: recall@k (the share of the order's other products found) and
hit rate (any found). Rankings: co-purchase counts (what ``bought_together`` serves), confidence, lift, and
lift shrunk toward 1 by 10 orders of prior. Also the strongest rules per channel, with support, confidence
and lift.

    python benchmarks/baskets.py [--people 3000] [--days 60] [--holdout 14] [--k 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--holdout", type=int, default=14)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from omnithread.analytics.baskets import association_rules, compare_bought_together
    from omnithread.config import Settings
    from omnithread.sim import WorldConfig, simulate
    from omnithread.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="omnithread-baskets-") as scratch:
        root = Path(scratch)
        manifest = simulate(WorldConfig.demo(people=args.people, days=args.days), root / "world")
        with Workspace(Settings(data_dir=root / "data")) as ws:
            ws.ingestor().ingest_paths(manifest["sources"])
            started = time.perf_counter()
            found = compare_bought_together(ws.engine, args.holdout, args.k)
            found["compare_s"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            rules = association_rules(ws.engine, by="channel", min_orders=5, limit=3)
            found["rules_s"] = round(time.perf_counter() - started, 2)
            found["top_rules_by_channel"] = rules
    found["world"] = {"people": args.people, "days": args.days}
    if args.json:
        json.dump(found, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    print(
        f"Held-out {found['holdout_days']} days of a {args.days}-day retailer ({args.people:,} people): "
        f"{found['held_out_orders']:,} orders of two products or more, {found['queries']:,} queries; "
        f"learnt from {found['train_orders']:,} orders"
    )
    k = found["k"]
    print(f"{'ranking':<22} {f'recall@{k}':>10} {f'hit rate@{k}':>12}")
    for name, figures in found["rankings"].items():
        print(f"{name:<22} {figures[f'recall_at_{k}']:>10} {figures[f'hit_rate_at_{k}']:>12}")
    print(f"best: {found['best']} ({found['compare_s']} s)\n")
    print(f"{'channel':<8} {'rule':<20} {'orders':>7} {'support':>9} {'confidence':>11} {'lift':>7}")
    for r in found["top_rules_by_channel"]:
        rule = f"{r['antecedent']} -> {r['consequent']}"
        print(f"{r['group_key']:<8} {rule:<20} {r['orders']:>7} {r['support']:>9} {r['confidence']:>11} {r['lift']:>7}")


if __name__ == "__main__":
    main()
