"""How well persons match the truth: the simulator knows who owns every identifier.

Pairwise precision and recall count pairs of identifiers put in one person; a
cluster is exact when it holds all and only one true person's identifiers. An
over-merged person holds identifiers of more than one true person; an
under-merged true person is spread over more than one resolved person.
Identifiers with more than one true owner (a family's shared card) have no right
answer and are left out; so are identifiers no event ever named.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from omnithread.engine.base import Engine
from omnithread.privacy import IdentifierType, Pseudonymiser

__all__ = ["evaluate_against_truth", "truth_nodes", "connection_summary"]

_HASHED = {"email", "phone", "loyalty_card", "payment_token", "palm_token", "app_code"}
_RAW = {
    "account": "account",
    "device": "device",
    "voice_device": "voice_device",
    "signup": "store_session",
    "till_order": "store_session",
    "store_visit": "store_session",
}


def truth_nodes(truth_dir: Path, pseudonymiser: Pseudonymiser) -> pa.Table:
    """The truth as (node, true_person) with the node ids the graph uses."""
    rows = pq.read_table(Path(truth_dir) / "identifiers.parquet").to_pylist()
    nodes, owners = [], []
    for row in rows:
        kind, value = row["type"], row["value"]
        if kind in _HASHED:
            node = f"{kind}:{pseudonymiser.hash(IdentifierType(kind), value)}"
        elif kind in _RAW:
            node = f"{_RAW[kind]}:{value}"
        else:
            continue
        nodes.append(node)
        owners.append(row["person_id"])
    return pa.table({"node": nodes, "true_person": owners})


def evaluate_against_truth(engine: Engine, pseudonymiser: Pseudonymiser, truth_dir: Path) -> dict:
    """Pairwise and cluster precision, recall and F1, and over- and under-merge rates."""
    engine.register("truth_nodes", truth_nodes(truth_dir, pseudonymiser))
    try:
        engine.execute("""
            CREATE OR REPLACE TEMP TABLE judged AS
            WITH owners AS (
                SELECT node, min(true_person) AS true_person, count(DISTINCT true_person) AS owners
                FROM truth_nodes GROUP BY node
            )
            SELECT m.identifier, m.person_id, o.true_person
            FROM identity_map m JOIN owners o ON o.node = m.identifier
            WHERE o.owners = 1 AND m.person_id IS NOT NULL""")
        pairs = engine.rows("""
            WITH p AS (SELECT person_id, count(*) AS n FROM judged GROUP BY 1),
                 t AS (SELECT true_person, count(*) AS n FROM judged GROUP BY 1),
                 pt AS (SELECT person_id, true_person, count(*) AS n FROM judged GROUP BY 1, 2)
            SELECT (SELECT sum(n * (n - 1) / 2) FROM p) AS predicted,
                   (SELECT sum(n * (n - 1) / 2) FROM t) AS actual,
                   (SELECT sum(n * (n - 1) / 2) FROM pt) AS correct""")[0]
        clusters = engine.rows("""
            WITH p AS (SELECT person_id, count(DISTINCT true_person) AS owners, min(true_person) AS owner,
                              count(*) AS n FROM judged GROUP BY 1),
                 t AS (SELECT true_person, count(DISTINCT person_id) AS parts, count(*) AS n FROM judged GROUP BY 1)
            SELECT (SELECT count(*) FROM p) AS predicted, (SELECT count(*) FROM t) AS actual,
                   (SELECT count(*) FROM p WHERE owners > 1) AS over_merged,
                   (SELECT count(*) FROM t WHERE parts > 1) AS under_merged,
                   (SELECT count(*) FROM p JOIN t ON t.true_person = p.owner
                    WHERE p.owners = 1 AND t.parts = 1) AS exact,
                   (SELECT count(*) FROM judged) AS identifiers""")[0]
        left_out = engine.scalar(
            "SELECT count(DISTINCT node) FROM truth_nodes WHERE node IN "
            "(SELECT node FROM truth_nodes GROUP BY node HAVING count(DISTINCT true_person) > 1)"
        )
    finally:
        engine.unregister("truth_nodes")
    return _metrics(pairs, clusters, left_out)


def _ratio(a, b) -> float:
    return round(float(a) / float(b), 4) if b else 1.0


def _f1(p: float, r: float) -> float:
    return round(2 * p * r / (p + r), 4) if p + r else 0.0


def _metrics(pairs: dict, clusters: dict, left_out: int) -> dict:
    pp, pr = _ratio(pairs["correct"], pairs["predicted"]), _ratio(pairs["correct"], pairs["actual"])
    cp, cr = _ratio(clusters["exact"], clusters["predicted"]), _ratio(clusters["exact"], clusters["actual"])
    return {
        "identifiers_judged": clusters["identifiers"],
        "shared_identifiers_left_out": left_out,
        "pairwise": {"precision": pp, "recall": pr, "f1": _f1(pp, pr)},
        "cluster": {"precision": cp, "recall": cr, "f1": _f1(cp, cr)},
        "persons": clusters["predicted"],
        "true_persons": clusters["actual"],
        "over_merge_rate": _ratio(clusters["over_merged"], clusters["predicted"]),
        "under_merge_rate": _ratio(clusters["under_merged"], clusters["actual"]),
    }


def connection_summary(engine: Engine) -> dict:
    """What the connection achieved: identities joined, and store revenue now tied to online customers."""
    counts = engine.rows("""
        SELECT count(*) FILTER (WHERE identifier_type IN ('account', 'device', 'email')) AS online_identities,
               count(*) FILTER (WHERE identifier_type IN ('store_session', 'loyalty_card', 'palm_token'))
                   AS store_identities,
               count(DISTINCT person_id) AS persons
        FROM identity_map""")[0]
    revenue = engine.rows("""
        SELECT sum(TRY_CAST(e.properties->>'total' AS DOUBLE)) AS store_revenue,
               sum(TRY_CAST(e.properties->>'total' AS DOUBLE)) FILTER (WHERE p.account > 0) AS known_revenue
        FROM events e
        JOIN identity_map m ON m.identifier = 'store_session:' || e.anonymous_id
        LEFT JOIN persons p USING (person_id)
        WHERE e.event = 'Order Completed' AND e.channel = 'store'""")[0]
    # No store revenue yet: no share to speak of (not 100%).
    share = _ratio(revenue["known_revenue"] or 0, revenue["store_revenue"]) if revenue["store_revenue"] else None
    return {
        **counts,
        "store_revenue": round(revenue["store_revenue"] or 0, 2),
        "store_revenue_known_online_customer_share": share,
    }
