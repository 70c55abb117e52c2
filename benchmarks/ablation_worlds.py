"""The ablation of omnithread's claim over several simulated worlds, under two identity settings.

One demo world's captured share moves by ten points when NDCG@10 moves by a few thousandths, so
this runs the demo (every step, sensing included) for several seeds with one fixed secret, then
resolves each world's log again under each identity setting and runs the ablation on it:

* ``default``: today's ``IdentityConfig()`` (one phone and one loyalty card per person, a payment
  card two accounts pay with joins nobody);
* ``earlier``: the looser limits used before (three phones, three loyalty cards, a card joining up
  to four accounts).

It prints, per world and setting, pairwise F1 and over-merge against the truth, NDCG@10 of the
siloed, joined, ceiling and reachable-ceiling variants (every link decided right), the share of the
ceiling's gain captured, the share of the reachable ceiling's gain captured, and the reachable
ceiling's own share of the ceiling's gain (the most any resolution could capture from that log);
then the means.

    python benchmarks/ablation_worlds.py [--seeds 7 8 9] [--identity default earlier] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMNITHREAD_SECRET", "ablation-worlds-benchmark-secret")  # one key: runs repeat exactly

from omnithread.config import Settings  # noqa: E402
from omnithread.demo import run_demo  # noqa: E402
from omnithread.identity import IdentityConfig, evaluate_against_truth, resolve_identities  # noqa: E402
from omnithread.recommend.ablation import run_ablation  # noqa: E402
from omnithread.sim import WorldConfig  # noqa: E402
from omnithread.workspace import Workspace  # noqa: E402

SETTINGS = {
    "default": IdentityConfig(),
    "earlier": IdentityConfig(
        limits={**IdentityConfig().limits, "phone": 3, "loyalty_card": 3},
        max_accounts={**IdentityConfig().max_accounts, "payment_token": 4},
    ),
}


def measure(seed: int, scratch: Path, settings: list[str]) -> list[dict]:
    world, data = scratch / f"world-{seed}", scratch / f"data-{seed}"
    run_demo(Settings(data_dir=data), WorldConfig.demo(seed=seed), world)
    rows = []
    for name in settings:
        config = SETTINGS[name]
        with Workspace(Settings(data_dir=data)) as ws:
            resolve_identities(ws.engine, ws.pseudonymiser, config)
            accuracy = evaluate_against_truth(ws.engine, ws.pseudonymiser, world / "truth")
            result = run_ablation(ws.engine, ws.pseudonymiser, world / "truth")
        ndcg = {
            v: round(result["variants"][v]["all"]["ndcg@10"], 4)
            for v in ("siloed", "joined", "ceiling", "ceiling, reachable")
        }
        rows.append(
            {
                "seed": seed,
                "identity": name,
                "pairwise_f1": accuracy["pairwise"]["f1"],
                "over_merge": accuracy["over_merge_rate"],
                "ndcg@10": ndcg,
                "captured": result["captured_share_of_ceiling_gain"],
                "captured_reachable": result["captured_share_of_reachable_ceiling_gain"],
                "reachable": result["reachable_share_of_ceiling_gain"],
            }
        )
    return rows


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--identity", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnithread-ablation-") as scratch:
        rows = [row for seed in args.seeds for row in measure(seed, Path(scratch), args.identity)]
    means = {
        name: {
            "pairwise_f1": _mean(r["pairwise_f1"] for r in rows if r["identity"] == name),
            "joined": _mean(r["ndcg@10"]["joined"] for r in rows if r["identity"] == name),
            "captured": _mean(r["captured"] for r in rows if r["identity"] == name),
            "captured_reachable": _mean(r["captured_reachable"] for r in rows if r["identity"] == name),
            "reachable": _mean(r["reachable"] for r in rows if r["identity"] == name),
        }
        for name in args.identity
    }
    if args.json:
        json.dump({"worlds": rows, "means": means}, sys.stdout)
        sys.stdout.write("\n")
        return
    print("Ablation over simulated worlds (demo retailer, NDCG@10 on all held-out purchases)")
    print(
        f"{'seed':>5} {'identity':9} {'pair F1':>8} {'over':>6} {'siloed':>8} {'joined':>8} {'ceiling':>8}"
        f" {'reachable':>10} {'captured':>9} {'of reachable':>13} {'reachable share':>16}"
    )

    def pct(value) -> str:
        return f"{value:.0%}" if value is not None else "n/a"

    for r in rows:
        n = r["ndcg@10"]
        print(
            f"{r['seed']:>5} {r['identity']:9} {r['pairwise_f1']:>8.3f} {r['over_merge']:>6.3f} {n['siloed']:>8.4f}"
            f" {n['joined']:>8.4f} {n['ceiling']:>8.4f} {n['ceiling, reachable']:>10.4f} {pct(r['captured']):>9}"
            f" {pct(r['captured_reachable']):>13} {pct(r['reachable']):>16}"
        )
    for name, m in means.items():
        print(
            f"mean {name:9}: pairwise F1 {m['pairwise_f1']}, joined NDCG@10 {m['joined']}, "
            f"captured {pct(m['captured'])} of the ceiling's gain, {pct(m['captured_reachable'])} of the "
            f"reachable ceiling's; the reachable ceiling holds {pct(m['reachable'])} of the ceiling's gain"
        )


if __name__ == "__main__":
    main()
