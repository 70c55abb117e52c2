"""Baskets: association rules between products bought together (support, confidence, lift), per store and
per channel, and a measure of which ranking predicts held-out baskets best for ``bought_together``.

A rule A -> B over a set of orders: support = orders with both / orders; confidence = orders with both /
orders with A; lift = confidence / (orders with B / orders): above 1, A raises the chance of B. Orders are
counted once per product (a basket is a set). Rules come from the engine's SQL (a self-join of order lines
on the order); the comparison ranks in Python on the aggregated pairs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import scipy.sparse as sp

from omnithread.engine.base import Engine
from omnithread.errors import InvalidRequestError

__all__ = ["association_rules", "compare_bought_together", "RANKINGS"]

_GROUPS = {"all": "'all'", "store": "coalesce(store_id, 'online')", "channel": "channel"}


def _lines_sql(until: datetime | None = None, since: datetime | None = None) -> str:
    where = ["event = 'Order Completed'"]
    if until is not None:
        where.append(f"event_at < TIMESTAMPTZ '{until.isoformat()}'")
    if since is not None:
        where.append(f"event_at >= TIMESTAMPTZ '{since.isoformat()}'")
    return f"""
        SELECT DISTINCT message_id, store_id, channel, event_at, line->>'product_id' AS product_id
        FROM (SELECT message_id, store_id, channel, event_at,
                     unnest(TRY_CAST(properties->'products' AS JSON[])) AS line
              FROM events WHERE {" AND ".join(where)})
        WHERE line->>'product_id' IS NOT NULL"""


def association_rules(
    engine: Engine,
    by: str = "all",
    min_orders: int = 5,
    min_confidence: float = 0.0,
    limit: int = 100,
) -> list[dict]:
    """Rules A -> B per group (``by``: all, store, channel) with at least ``min_orders`` orders holding both
    and ``min_confidence``; the strongest by lift first (then by orders), ``limit`` per group."""
    if by not in _GROUPS:
        raise InvalidRequestError("by", by, "one of " + ", ".join(_GROUPS))
    if min_orders < 1:
        raise InvalidRequestError("min_orders", min_orders, "at least 1")
    if not 0 <= min_confidence <= 1:
        raise InvalidRequestError("min_confidence", min_confidence, "between 0 and 1")
    group = _GROUPS[by]
    return engine.rows(f"""
        WITH lines AS (SELECT {group} AS grp, message_id, product_id FROM ({_lines_sql()})),
        orders AS (SELECT grp, count(DISTINCT message_id) AS n FROM lines GROUP BY 1),
        items AS (SELECT grp, product_id, count(*) AS n FROM lines GROUP BY 1, 2),
        pairs AS (
            SELECT a.grp, a.product_id AS antecedent, b.product_id AS consequent, count(*) AS n
            FROM lines a JOIN lines b ON a.grp = b.grp AND a.message_id = b.message_id
             AND a.product_id <> b.product_id
            GROUP BY 1, 2, 3 HAVING count(*) >= {int(min_orders)}
        ), rules AS (
            SELECT p.grp AS group_key, p.antecedent, p.consequent, p.n AS orders,
                   round(p.n / o.n, 6) AS support, round(p.n / ia.n, 6) AS confidence,
                   round((p.n / ia.n) / (ib.n / o.n), 4) AS lift
            FROM pairs p JOIN orders o ON o.grp = p.grp
            JOIN items ia ON ia.grp = p.grp AND ia.product_id = p.antecedent
            JOIN items ib ON ib.grp = p.grp AND ib.product_id = p.consequent
            WHERE p.n / ia.n >= {float(min_confidence)}
        )
        SELECT * FROM (
            SELECT *, row_number() OVER (PARTITION BY group_key ORDER BY lift DESC, orders DESC,
                                         antecedent, consequent) AS rank
            FROM rules)
        WHERE rank <= {int(limit)} ORDER BY group_key, rank""")


# how each ranking scores candidate B for a basket, from pair counts C, item counts c and the order count N
RANKINGS = ("co_purchase_counts", "confidence", "lift", "lift_shrunk")


def _score(method: str, co: sp.csr_matrix, counts: np.ndarray, n: int, basket: list[int]) -> np.ndarray:
    together = np.asarray(co[basket].toarray(), dtype=np.float64)  # basket items x products
    if method == "co_purchase_counts":
        return together.sum(axis=0)
    confidence = together / np.maximum(counts[basket], 1)[:, None]
    if method == "confidence":
        return confidence.sum(axis=0)
    base = np.maximum(counts, 1) / n
    if method == "lift":
        return (confidence / base).sum(axis=0)
    # lift shrunk toward 1 (independence) by 10 orders' worth of prior: a pair seen once among rare products
    # no longer outranks a pair seen often
    expected = counts[basket][:, None] * base[None, :]
    return ((together + 10) / (expected + 10)).sum(axis=0)


def compare_bought_together(engine: Engine, holdout_days: int = 14, k: int = 10, max_orders: int = 5000) -> dict:
    """Each ranking learnt on orders before the log's last ``holdout_days`` days, asked for each held-out
    order with two products or more: given one of its products, how many of the others are in the top
    ``k`` (recall@k, and hit rate: any of them). Up to ``max_orders`` held-out orders, the latest."""
    last = engine.scalar("SELECT max(event_at) FROM events WHERE event = 'Order Completed'")
    if last is None:
        raise InvalidRequestError("events", 0, "a log with orders")
    cutoff = last - timedelta(days=holdout_days)
    train = engine.rows(f"SELECT message_id, product_id FROM ({_lines_sql(until=cutoff)})")
    test = engine.rows(
        f"SELECT message_id, product_id, event_at FROM ({_lines_sql(since=cutoff)}) ORDER BY event_at DESC"
    )
    products: dict[str, int] = {}
    orders: dict[str, int] = {}
    rows, cols = [], []
    for r in train:
        rows.append(orders.setdefault(r["message_id"], len(orders)))
        cols.append(products.setdefault(r["product_id"], len(products)))
    n = len(orders)
    if n == 0:
        raise InvalidRequestError("holdout_days", holdout_days, "fewer days than the log holds orders before")
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(products)))
    matrix.data[:] = 1
    co = (matrix.T @ matrix).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    baskets: dict[str, list[int]] = {}
    for r in test:
        j = products.get(r["product_id"])
        if j is not None:
            baskets.setdefault(r["message_id"], []).append(j)
    held = [sorted(set(b)) for b in baskets.values() if len(set(b)) >= 2][:max_orders]
    results = {}
    for method in RANKINGS:
        recalls, hits = [], []
        for basket in held:
            for a in basket:
                scores = _score(method, co, counts, n, [a])
                scores[a] = -np.inf
                top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
                top = top[scores[top] > 0]
                others = set(basket) - {a}
                found = len(others & set(top.tolist()))
                recalls.append(found / min(k, len(others)))
                hits.append(found > 0)
        results[method] = {
            f"recall_at_{k}": round(float(np.mean(recalls)), 4) if recalls else None,
            f"hit_rate_at_{k}": round(float(np.mean(hits)), 4) if hits else None,
        }
    best = max(RANKINGS, key=lambda m: results[m][f"recall_at_{k}"] or 0)
    return {
        "holdout_days": holdout_days,
        "k": k,
        "train_orders": n,
        "held_out_orders": len(held),
        "queries": sum(len(b) for b in held),
        "rankings": results,
        "best": best,
    }
