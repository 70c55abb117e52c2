"""Serving recommendations on the simulated retailer: one request at a time against every person at once.

Simulates the demo retailer (or ``--people``), imports it with its catalogue and stock, resolves
identities, builds profiles and trains (signals and model chosen on validation, as the demo does);
then, in the same process:

* one ``for_you`` request for each of ``--requests`` persons with history (latency p50, p99, mean);
* one ``in_store`` request for each of them at the busiest store;
* ``recommend_all``: the same answers for every person the identity map knows, computed together.

It prints the latencies, the batch's persons per second, and how many times cheaper a person is in the
batch than in a request (mean request time over batch time per person).

    python benchmarks/recommend_serving.py [--people 3000] [--requests 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from omnithread.config import Settings
from omnithread.identity import resolve_identities
from omnithread.profile import build_profiles
from omnithread.recommend.service import Recommendations
from omnithread.sim import WorldConfig, simulate
from omnithread.workspace import Workspace


def _latencies(call, persons: list[str]) -> dict:
    took = []
    for person in persons:
        started = time.perf_counter()
        call(person)
        took.append((time.perf_counter() - started) * 1000)
    took = np.array(took)
    return {
        "requests": len(took),
        "p50_ms": round(float(np.percentile(took, 50)), 2),
        "p99_ms": round(float(np.percentile(took, 99)), 2),
        "mean_ms": round(float(took.mean()), 2),
    }


def measure(people: int, requests: int, seed: int = 7) -> dict:
    with tempfile.TemporaryDirectory(prefix="omnithread-serving-") as scratch:
        config = WorldConfig.demo(seed=seed, people=people)
        manifest = simulate(config, Path(scratch) / "world")
        with Workspace(Settings(data_dir=Path(scratch) / "data")) as ws:
            ingestor = ws.ingestor()
            ingestor.ingest_paths(manifest["sources"])
            for kind in ("catalogue", "inventory"):
                ws.ingestor().ingest_reference([manifest["reference"][kind]], kind)
            resolve_identities(ws.engine, ws.pseudonymiser)
            build_profiles(ws.engine)
            service = Recommendations.train(ws.engine, ws.pseudonymiser, Path(scratch) / "models")
            events = ws.engine.scalar("SELECT count(*) FROM events")
            store = ws.engine.scalar(
                "SELECT store_id FROM events WHERE channel = 'store' AND store_id IS NOT NULL "
                "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
            )
            with_history = [
                r["person_id"]
                for r in ws.engine.rows(
                    "SELECT person_id FROM profiles WHERE orders > 0 AND coalesce(consent_personalisation, true) "
                    "ORDER BY hash(person_id) LIMIT ?",
                    [requests],
                )
            ]
            service.recommend(with_history[0], "for_you")  # store-wide facts read once, as a running service would
            service.recommend(with_history[0], "in_store", store=store)
            for_you = _latencies(lambda p: service.recommend(p, "for_you", n=10), with_history)
            in_store = _latencies(lambda p: service.recommend(p, "in_store", n=10, store=store), with_history)
            started = time.perf_counter()
            everyone = sum(1 for _ in service.recommend_all("for_you", n=10))
            batch_seconds = time.perf_counter() - started
    per_person_ms = batch_seconds * 1000 / everyone
    return {
        "people": people,
        "events": events,
        "persons": everyone,
        "store": store,
        "for_you": for_you,
        "in_store": in_store,
        "batch": {
            "seconds": round(batch_seconds, 2),
            "persons_per_second": round(everyone / batch_seconds, 1),
            "ms_per_person": round(per_person_ms, 3),
        },
        "batch_cheaper_than_a_request": round(for_you["mean_ms"] / per_person_ms, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=3_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.people, args.requests)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    print(
        f"Serving on the simulated retailer: {args.people:,} people, {result['events']:,} events, "
        f"{result['persons']:,} persons resolved"
    )
    print(f"{'what':36} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, key in (("for_you, one request", "for_you"), (f"in_store at {result['store']}, one request", "in_store")):
        r = result[key]
        print(f"{name:36} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['mean_ms']:>8}")
    b = result["batch"]
    print(
        f"{'for_you for everyone, together':36} {'':>8} {'':>8} {b['ms_per_person']:>8}  "
        f"({result['persons']:,} persons in {b['seconds']} s, {b['persons_per_second']:,} persons/s)"
    )
    print(f"A person costs {result['batch_cheaper_than_a_request']}x less in the batch than in a request.")


if __name__ == "__main__":
    main()
