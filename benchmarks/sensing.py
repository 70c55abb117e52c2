"""Checkout-free sensing against the simulator's truth, per scenario family, and its throughput.

For each family (simple, crowded, misplaced, same_weight, handoff) a scene of ``--trips`` trips is
rendered into gate, camera and plate signals and run through the sensing engine. Printed per family:
receipt-line precision, recall and F1 (units), exact-receipt rate, product detection rate, shopper
association accuracy, share of trips sent to review, and the store time from exit to receipt.

Throughput: a store of 20 gondolas (1,440 plates) with 30 shoppers in it at once, every plate message
sent as its own JSON-like message over a jittery wire (delivered up to 0.5 s out of order, 1% twice);
the real-time factor is seconds of store time processed per second of one core. The same scene is
also fed as gateway batches (one message per tick for all plates) for comparison, in the same run.

    python benchmarks/sensing.py [--trips 100] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from omnithread.sensing import SensingConfig, SensingEngine
from omnithread.sensing.evaluate import evaluate_receipts
from omnithread.sim.sensors import FAMILIES, render_scene, scenario


def run_family(family: str, trips: int, seed: int) -> dict:
    signals = render_scene(scenario(family, trips, seed))
    engine = SensingEngine(signals.layout)
    signals.feed(engine)
    receipts = engine.close()
    result = evaluate_receipts(
        signals.truth, receipts, engine.weight_events, signals.layout.plate_ids, engine.config.lateness
    )
    result["camera_id_switches"] = len(signals.truth["switches"])
    result["sensor_problems"] = len(engine.problems)
    return result


def throughput(seed: int) -> dict:
    signals = render_scene(scenario("crowded", 30, seed, gondolas=20, spacing=1.0))
    store_seconds = signals.end - signals.start
    messages = signals.messages(shuffle=0.5, duplicates=0.01, seed=seed)
    engine = SensingEngine(signals.layout, SensingConfig())
    t = time.process_time()
    engine.feed_many(messages)
    receipts = engine.close()
    wire = time.process_time() - t
    batch_engine = SensingEngine(signals.layout)
    t = time.process_time()
    signals.feed(batch_engine)
    batch_receipts = batch_engine.close()
    batch = time.process_time() - t
    wire_eval = evaluate_receipts(signals.truth, receipts, engine.weight_events, signals.layout.plate_ids)
    same = {r.visit_id: r.basket for r in receipts} == {r.visit_id: r.basket for r in batch_receipts}
    return {
        "plates": signals.layout.plates,
        "shoppers": len(signals.truth["trips"]),
        "store_seconds": round(store_seconds, 1),
        "messages": len(messages),
        "messages_per_store_second": round(len(messages) / store_seconds),
        "wire_cpu_seconds": round(wire, 2),
        "wire_messages_per_second": round(len(messages) / wire),
        "wire_realtime_factor": round(store_seconds / wire, 1),
        "batch_cpu_seconds": round(batch, 2),
        "batch_realtime_factor": round(store_seconds / batch, 1),
        "wire_f1": wire_eval["f1"],
        "wire_equals_batch": same,
        "duplicates_ignored": engine.duplicates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    families = {f: run_family(f, args.trips, args.seed) for f in FAMILIES}
    speed = throughput(args.seed)
    if args.json:
        json.dump({"families": families, "throughput": speed}, sys.stdout)
        sys.stdout.write("\n")
        return
    print(f"Checkout-free sensing against truth ({args.trips} trips a family, seed {args.seed})")
    cols = [
        "trips",
        "precision",
        "recall",
        "f1",
        "exact_receipts",
        "product_detection",
        "shopper_association",
        "review_share",
        "exit_to_receipt_s",
        "camera_id_switches",
    ]
    heads = ["trips", "P", "R", "F1", "exact", "detect", "assoc", "review", "exit→rcpt s", "id swaps"]
    print(f"{'family':12}" + "".join(f"{h:>12}" for h in heads))
    for name, r in families.items():
        print(f"{name:12}" + "".join(f"{r[c]:>12}" for c in cols))
    print()
    print(
        f"Throughput: {speed['plates']} plates, {speed['shoppers']} shoppers, "
        f"{speed['store_seconds']} s of store time, "
        f"{speed['messages']:,} messages ({speed['messages_per_store_second']:,}/s of store time)"
    )
    print(
        f"  wire (one message at a time, out of order, duplicates): {speed['wire_cpu_seconds']} s CPU, "
        f"{speed['wire_messages_per_second']:,} messages/s, real-time factor {speed['wire_realtime_factor']}x, "
        f"F1 {speed['wire_f1']}"
    )
    print(
        f"  gateway batches: {speed['batch_cpu_seconds']} s CPU, real-time factor {speed['batch_realtime_factor']}x; "
        f"same receipts as the wire: {speed['wire_equals_batch']}"
    )


if __name__ == "__main__":
    main()
