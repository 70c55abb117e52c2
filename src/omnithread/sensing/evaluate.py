"""Score receipts against the truth, as the open checkout-free competitions do.

* receipt lines: precision, recall and F1 over units (a line of 3 where the truth has 2 counts two
  right and one wrong); the engine's best guess counts, also on trips it sent to review;
* exact receipts: trips whose receipt equals the real cart, unit for unit;
* product detection: real picks and put-backs matched by a detected weight event on the same plate
  at the same moment with the right product and count;
* shopper association: of those, the share given to the right trip;
* review: trips sent to a person to check.
"""

from __future__ import annotations

import numpy as np

__all__ = ["evaluate_receipts"]


def evaluate_receipts(truth: dict, receipts, weight_events, plate_ids: list[str], lateness: float = 0.0) -> dict:
    """Score ``receipts`` against ``truth``. The exit-to-receipt time is in store time: from the exit to the
    chunk that closed the trip, plus ``lateness`` (live, the engine's watermark trails the newest message
    by that much)."""
    trips = {t["visit_id"]: t for t in truth["trips"]}
    session_visit = {t["session"]: t["visit_id"] for t in truth["trips"]}
    got = {r.visit_id: r for r in receipts}
    matched = predicted = actual = exact = 0
    for visit, trip in trips.items():
        real = trip["cart"]
        r = got.get(visit)
        guess = r.basket if r else {}
        matched += sum(min(q, guess.get(p, 0)) for p, q in real.items())
        predicted += sum(guess.values())
        actual += sum(real.values())
        exact += guess == real
    predicted += sum(sum(r.basket.values()) for v, r in got.items() if v not in trips)
    precision = matched / predicted if predicted else 1.0
    recall = matched / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    real_events = [e for e in truth["events"] if e["kind"] in ("pick", "return")]
    used: set[int] = set()
    detected = associated = 0
    by_plate: dict[str, list] = {}
    for ev in weight_events:
        by_plate.setdefault(plate_ids[ev.plate], []).append(ev)
    for e in real_events:
        for _k, ev in enumerate(by_plate.get(e["plate"], [])):
            if id(ev) in used or abs(ev.t_start - e["t_start"]) > 1.5:
                continue
            used.add(id(ev))
            if ev.product == e["product"] and ev.units == e["units"] and ev.kind == e["kind"]:
                detected += 1
                associated += ev.session == session_visit.get(e["session"])
            break
    latency = [
        r.closed_store_time - r.exited + lateness
        for r in receipts
        if r.visit_id in trips and not trips[r.visit_id]["never_exits"]
    ]
    n = len(trips)
    return {
        "trips": n,
        "receipt_lines": actual,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "exact_receipts": round(exact / n, 4) if n else 1.0,
        "product_detection": round(detected / len(real_events), 4) if real_events else 1.0,
        "shopper_association": round(associated / detected, 4) if detected else 1.0,
        "review_share": round(sum(r.review for r in receipts if r.visit_id in trips) / n, 4) if n else 0.0,
        "receipts_missing": sum(v not in got for v in trips),
        "exit_to_receipt_s": round(float(np.median(latency)), 2) if latency else None,
    }
