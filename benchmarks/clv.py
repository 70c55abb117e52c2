"""Lifetime value: fit time at a million persons, and the forecast checked on held-out days of a simulated retailer.

1. **Fit time.** A million persons drawn from the BG/NBD process itself (known parameters), with their
   spend from Gamma-Gamma; BG/NBD and Gamma-Gamma fitted on them, then every person scored (P(alive),
   expected purchases, a year's discounted value). Times are medians of ``--repeat`` runs. Two forms of the
   same draws: times in whole days, as omnithread summarises the log (people with equal summaries are
   fitted once), and in continuous time, where every person is distinct: the baseline, in the same process.
2. **Forecast on held-out days.** A simulated retailer (people who differ in how often they shop and who
   leave, ``rate_spread`` and ``churn_rate``; and one with the simulator's default habits) imported and
   resolved; the models fitted on the log before its last ``--holdout`` days predict each buyer's purchase
   days in them, compared with the log, beside a naive forecast (each person's own rate so far).

    python benchmarks/clv.py [--persons 1000000] [--people 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from omnithread.analytics import clv

TRUTH = {"r": 0.6, "alpha": 25.0, "a": 0.9, "b": 5.0}
SPEND = {"p": 4.0, "q": 3.0, "v": 40.0}


def draw(persons: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Persons from the BG/NBD and Gamma-Gamma processes, vectorised: purchases in (0, T] a Poisson process
    of the person's rate, stopped after each with the person's drop-out chance."""
    rng = np.random.default_rng(seed)
    big_t = rng.uniform(30, 730, persons)
    rate = rng.gamma(TRUTH["r"], 1 / TRUTH["alpha"], persons)
    drop = rng.beta(TRUTH["a"], TRUTH["b"], persons)
    arrivals = rng.poisson(rate * big_t)
    until_drop = rng.geometric(drop)  # the repeat purchase after which the person leaves
    x = np.minimum(arrivals, until_drop)
    # the x-th of n uniform arrival times in (0, T]
    t_x = np.where(x > 0, rng.beta(np.maximum(x, 1), np.maximum(arrivals - x + 1, 1)) * big_t, 0.0)
    # each person's mean spend per purchase ~ Gamma(q, v); their repeat purchases' mean from Gamma(p x, p x / nu)
    nu = rng.gamma(SPEND["q"], 1 / SPEND["v"], persons)
    mean = np.where(x > 0, rng.gamma(np.maximum(SPEND["p"] * x, 1e-9), 1 / (nu * np.maximum(x, 1))), 0.0)
    return {"frequency": x.astype(float), "recency": t_x, "T": big_t, "monetary": mean}


def timed(function, repeat: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def one_form(form: str, data: dict, persons: int, repeat: int) -> dict:
    args = (data["frequency"], data["recency"], data["T"])
    distinct = len(np.unique(np.column_stack(args), axis=0))
    bg_s, bg = timed(lambda: clv.fit_bgnbd(*args), repeat)
    gg_s, gg = timed(lambda: clv.fit_gamma_gamma(data["frequency"], data["monetary"]), repeat)
    score_s, _ = timed(
        lambda: (
            clv.probability_alive(bg, *args),
            clv.expected_purchases(bg, 90, *args),
            clv.lifetime_value(bg, gg, *args, data["monetary"], horizon=365),
        ),
        1,
    )
    return {
        "form": form,
        "persons": persons,
        "distinct_summaries": distinct,
        "bgnbd_fit_s": round(bg_s, 2),
        "gamma_gamma_fit_s": round(gg_s, 2),
        "score_s": round(score_s, 2),
        "bgnbd": {k: round(v, 3) for k, v in bg.items()},
        "gamma_gamma": {k: round(v, 3) for k, v in gg.items()},
    }


def fit_times(persons: int, repeat: int) -> list[dict]:
    drawn = draw(persons)
    whole = dict(drawn, recency=np.floor(drawn["recency"]), T=np.floor(drawn["T"]))
    whole["recency"] = np.minimum(whole["recency"], whole["T"])
    rows = [one_form(form, data, persons, repeat) for form, data in (
        ("whole days (as summarised)", whole), ("continuous time (baseline)", drawn)
    )]  # fmt: skip
    rows[0]["speedup_vs_baseline"] = round(
        (rows[1]["bgnbd_fit_s"] + rows[1]["gamma_gamma_fit_s"])
        / (rows[0]["bgnbd_fit_s"] + rows[0]["gamma_gamma_fit_s"]),
        2,
    )
    return rows


def holdout(people: int, days: int, holdout_days: int, habits: dict) -> dict:
    from omnithread.analytics.lifetime import validate_lifetime
    from omnithread.config import Settings
    from omnithread.flows import resolve_persons
    from omnithread.sim import WorldConfig, simulate
    from omnithread.workspace import Workspace

    start = date.today() - timedelta(days=days + 30)  # the log ends before today: no event from the future
    with tempfile.TemporaryDirectory(prefix="omnithread-clv-") as scratch:
        root = Path(scratch)
        config = WorldConfig(people=people, days=days, start=start, seed=5, **habits)
        manifest = simulate(config, root / "world")
        with Workspace(Settings(data_dir=root / "data")) as ws:
            ws.ingestor().ingest_paths(manifest["sources"])
            resolve_persons(ws)
            started = time.perf_counter()
            found = validate_lifetime(ws.engine, holdout_days)
            found["validate_s"] = round(time.perf_counter() - started, 2)
    found["world"] = {"people": people, "days": days, **habits}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--people", type=int, default=5_000, help="people of the simulated retailer")
    parser.add_argument("--days", type=int, default=240)
    parser.add_argument("--holdout", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    fits = fit_times(args.persons, args.repeat)
    worlds = [
        holdout(args.people, args.days, args.holdout, {"rate_spread": 1.0, "churn_rate": 0.004}),
        holdout(args.people, args.days, args.holdout, {}),
    ]
    result = {"fit": fits, "truth": {"bgnbd": TRUTH, "gamma_gamma": SPEND}, "holdout": worlds}
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(f"Fit and score {args.persons:,} persons (median of {args.repeat}); drawn with {TRUTH} and {SPEND}")
    print(f"{'form':<28} {'distinct':>9} {'BG/NBD s':>9} {'GG s':>6} {'score s':>8}  fitted")
    for row in fits:
        print(
            f"{row['form']:<28} {row['distinct_summaries']:>9,} {row['bgnbd_fit_s']:>9} {row['gamma_gamma_fit_s']:>6} "
            f"{row['score_s']:>8}  {row['bgnbd']} {row['gamma_gamma']}"
        )
    print(f"whole days fit {fits[0]['speedup_vs_baseline']}x faster than the baseline\n")
    for world in worlds:
        habits = {k: v for k, v in world["world"].items() if k not in ("people", "days")} or "default habits"
        print(
            f"Held-out {world['holdout_days']} days of a {world['world']['days']}-day retailer "
            f"({world['world']['people']:,} people, {habits}): {world['persons']:,} buyers, "
            f"{world['actual_total']:,} purchase days"
        )
        print(f"  {'forecast':<8} {'total':>9} {'error %':>8} {'MAE':>7} {'RMSE':>7} {'corr':>6}")
        for name in ("bgnbd", "naive"):
            f = world[f"{name}_forecast"]
            print(
                f"  {name:<8} {f['total']:>9,.0f} {f['total_error_pct']:>8} {f['mae']:>7} {f['rmse']:>7} "
                f"{f['correlation']:>6}"
            )
        print(f"  {'by calibration purchases':<26} {'persons':>8} {'actual':>8} {'BG/NBD':>8} {'naive':>8}")
        for g in world["by_frequency"]:
            print(f"  {g['frequency']:<26} {g['persons']:>8,} {g['actual']:>8} {g['predicted']:>8} {g['naive']:>8}")
        print()


if __name__ == "__main__":
    main()
