"""The ablation that tests omnithread's claim: does joining offline data to online data make
recommendations more precise, and how much of that does omnithread's own identity resolution deliver?

On the simulated retailer, one model is trained on the observed log in several ways and judged on
what each true person bought in the hold-out days (which no source saw), per channel of the purchase:

* ``siloed``: what a retailer without identity resolution has: online purchases are predicted from
  the person's online history only, store purchases from their store history only;
* ``online only`` and ``store only``: one channel's data for every purchase;
* ``joined``: every channel, joined into persons by omnithread's identity resolution;
* ``joined, no picks``: the same without the checkout-free store's picks and put-backs;
* ``ceiling``: every channel joined by the true identities;
* ``ceiling, reachable``: what a resolution that decided every link right would give: identifiers
  are joined where links between identifiers of one true person connect them (a shared key such as a
  family's payment card joins only the identifiers of each person it links separately), kept or
  dropped alike; what no evidence in the log ties to its person (a till order that named nobody, a
  device that never logged in, a card used only at tills) stays apart, as it must for any resolution.
  Its share of the ceiling's gain is the most identity resolution could capture from this log.

A true person is served, for a purchase on one channel, from the resolved person that holds most of their
events on that channel (the one a request from that channel would name); an over-merged person's mixed history
is served to each true person in it, as it would be. The share of the ceiling's gain that omnithread captures
is ``(joined - siloed) / (ceiling - siloed)`` on NDCG@10 over all held-out purchases; against the reachable
ceiling, ``captured_share_of_reachable_ceiling_gain``; and ``reachable_share_of_ceiling_gain`` is the
reachable ceiling's own share, the most the evidence allows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from omnithread.engine.base import Engine
from omnithread.identity.cluster import connected_components
from omnithread.identity.evaluate import truth_nodes
from omnithread.identity.graph import EVENT_PERSONS_SQL
from omnithread.privacy import Pseudonymiser
from omnithread.recommend.interactions import (
    FINE_GRAINED,
    ONLINE,
    SIGNALS,
    STORE,
    Interactions,
    SignalConfig,
    build_matrix,
    interaction_rows,
)
from omnithread.recommend.tuning import history_rows, holdout, judge, tune

__all__ = ["run_ablation", "ablation_svg", "ASSUMPTIONS"]

ASSUMPTIONS = [
    "Each simulated person has one latent taste over products that holds on every channel; channels differ "
    "only in their category mix (groceries mostly in store). Joining channels helps because of this built-in "
    "shared taste: the ablation measures how much of that help each way of joining recovers, not whether real "
    "shoppers' tastes are shared across channels.",
    "Picks and put-backs in checkout-free stores are drawn from the same taste as purchases; a put-back is "
    "interest in a product the person did not buy that trip.",
    "Hold-out purchases are new draws from the same tastes after the observed period. For every variant alike, "
    "the products a person truly bought in the observed period are left out of the ranking and of the "
    "hold-out (repeat purchases do not count); products only viewed or picked stay eligible.",
    "Households share some devices and payment cards; those events have no single true owner and follow the "
    "lowest-numbered owner in the ceiling.",
]

TRUE_PERSONS_SQL = EVENT_PERSONS_SQL.replace("identity_map", "true_identity_map")
REACHABLE_PERSONS_SQL = EVENT_PERSONS_SQL.replace("identity_map", "reachable_identity_map")


def reachable_map(engine: Engine) -> int:
    """Write ``reachable_identity_map(identifier, person_id)`` from ``true_identity_map`` and the
    identity graph's links (kept or dropped): the persons a resolution that decided every link right
    would find. Two identifiers of one true person are joined when a link joins them, or when both
    link to one key (a card, an email, a phone: nodes with no events of their own, which the truth
    does not own); a key is split per true person it links, so a family's card joins each member's
    own identifiers and nothing across them. Links between two keys are not followed. Returns the
    number of persons."""
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE _reach_links AS
        WITH ends AS (SELECT a AS x, b AS y FROM identity_edges UNION ALL SELECT b, a FROM identity_edges),
        owned AS (SELECT e.x, e.y, tx.person_id AS px, ty.person_id AS py FROM ends e
                  LEFT JOIN true_identity_map tx ON tx.identifier = e.x
                  LEFT JOIN true_identity_map ty ON ty.identifier = e.y)
        SELECT DISTINCT x AS a, y AS b FROM owned WHERE px = py AND x < y
        UNION ALL
        SELECT DISTINCT x || ' @ ' || py, y FROM owned WHERE px IS NULL AND py IS NOT NULL""")
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE _reach_nodes AS
        SELECT node, row_number() OVER (ORDER BY node) - 1 AS id FROM (
            SELECT a AS node FROM _reach_links UNION SELECT b FROM _reach_links)""")
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE _reach_edges AS
        SELECT na.id AS a, nb.id AS b FROM _reach_links l
        JOIN _reach_nodes na ON na.node = l.a JOIN _reach_nodes nb ON nb.node = l.b""")
    connected_components(engine, "_reach_edges", "_reach_labels")
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE reachable_identity_map AS
        SELECT t.identifier, coalesce('reachable:' || root.node, t.identifier) AS person_id
        FROM true_identity_map t
        LEFT JOIN _reach_nodes n ON n.node = t.identifier
        LEFT JOIN _reach_labels l ON l.id = n.id
        LEFT JOIN _reach_nodes root ON root.id = l.label""")
    for table in ("_reach_links", "_reach_nodes", "_reach_edges", "_reach_labels"):
        engine.execute(f"DROP TABLE IF EXISTS {table}")
    return engine.scalar("SELECT count(DISTINCT person_id) FROM reachable_identity_map")


def _served_rows(engine: Engine, channels: tuple[str, ...], persons_sql: str = EVENT_PERSONS_SQL) -> dict[str, str]:
    """True person -> the person (of ``persons_sql``; the resolved ones by default) holding most of their
    events on ``channels`` (the identity a request from that channel names), else on any channel."""
    marks = ", ".join(f"'{c}'" for c in channels)
    rows = engine.rows(
        """
        WITH ev AS (
            SELECT r.person_id, t.person_id AS true_person, CASE WHEN r.channel IN ("""
        + marks
        + """) THEN 1000000
                   ELSE 1 END AS w
            FROM ("""
        + persons_sql
        + """) r JOIN ("""
        + TRUE_PERSONS_SQL
        + """) t USING (message_id)
            WHERE r.person_id IS NOT NULL AND t.person_id IS NOT NULL)
        SELECT true_person, first(person_id ORDER BY n DESC, person_id) AS person_id FROM (
            SELECT true_person, person_id, sum(w) AS n FROM ev GROUP BY 1, 2) GROUP BY 1"""
    )
    return {r["true_person"]: r["person_id"] for r in rows}


class ChannelModel:
    """DLAE (EASE with dropout as regulariser) from a person's history on the input channels to what
    they will buy on one target channel: ``W = (X'X + L)^-1 X'Y``, ``L = p/(1-p) diag(X'X) + lambda I``.
    With input and target the same channel it is plain DLAE; with every channel as input it is how
    joined data predicts one channel's purchases (channels differ in what is bought there)."""

    def __init__(self, lam: float = 100.0, dropout: float = 0.33):
        self.lam, self.dropout = lam, dropout

    def fit(self, X: sp.csr_matrix, Y: sp.csr_matrix) -> "ChannelModel":
        G = (X.T @ X).toarray().astype(np.float64)
        A = G.copy()
        A[np.diag_indices_from(A)] += self.dropout / (1 - self.dropout) * np.diag(G) + self.lam
        self.W = np.linalg.solve(A, (X.T @ Y).toarray().astype(np.float64)).astype(np.float32)
        return self

    def scores(self, history: sp.csr_matrix) -> np.ndarray:
        return np.asarray(history @ self.W)

    def describe(self) -> dict:
        return {"model": "dlae (input channels -> target channel)", "lam": self.lam, "dropout": self.dropout}


CROSS_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


def _cross_weight(
    rows: Interactions,
    cfg: SignalConfig,
    target: tuple[str, ...],
    products: list[str],
    make_model,
    holdout_days: float = 7.0,
) -> tuple[SignalConfig, float]:
    """How much the other channels' history should count when predicting purchases on ``target``,
    chosen on a validation split of ``rows`` themselves (their last ``holdout_days``; no truth used):
    the multiplier on non-target channels with the best NDCG@10 on the held-out target purchases."""
    train, test, bought, _ = holdout(rows, holdout_days, products, target)
    if not test:
        return cfg, 1.0
    people = sorted(test)
    Y = train.matrix(cfg.with_(channels=target), products=products, persons=people + ["~"])
    others = sorted(set(rows.channel.tolist()) - set(target))
    best, best_score = 1.0, -1.0
    for w in CROSS_GRID:
        x_cfg = cfg.with_(channel_weights={c: w for c in others})
        X = train.matrix(x_cfg, products=products)
        Yfull = train.matrix(cfg.with_(channels=target), products=products, persons=X.persons)
        model = make_model().fit(X.matrix, Yfull.matrix)
        score = judge(
            model,
            history_rows(X, people, len(products)),
            np.asarray(Y.matrix.sum(axis=0)).ravel(),
            [test[p] for p in people],
            [bought.get(p, set()) for p in people],
        )["ndcg@10"]
        if score > best_score + 1e-4:
            best, best_score = w, score
    return cfg.with_(channel_weights={c: best for c in others}), best


def run_ablation(
    engine: Engine,
    pseudonymiser: Pseudonymiser,
    truth_dir: Path | str,
    make_model=None,
    config: SignalConfig | None = None,
    tuning: dict | None = None,
) -> dict:
    """Run every variant; returns NDCG@10, Recall@20 and MAP@10 per variant and purchase channel.

    Unless given, the signal weights, decay and the model's regularisation are chosen on the log's own
    validation split (:func:`omnithread.recommend.tuning.tune`; pass ``tuning`` to reuse one), on the
    joined data, and used for every variant alike."""
    truth_dir = Path(truth_dir)
    if config is None or make_model is None:
        if tuning is None:
            tuning = tune(engine)
        config = config or tuning["config"]
        if make_model is None:
            params = tuning["params"] if tuning["model"] == "dlae" else {"lam": 100.0, "dropout": 0.33}
            make_model = lambda: ChannelModel(**params)  # noqa: E731
    nodes = truth_nodes(truth_dir, pseudonymiser)
    engine.register("truth_nodes_raw", nodes)
    try:
        engine.execute("""CREATE OR REPLACE TEMP TABLE true_identity_map AS
                          SELECT node AS identifier, min(true_person) AS person_id FROM truth_nodes_raw GROUP BY 1""")
    finally:
        engine.unregister("truth_nodes_raw")
    resolved_table = interaction_rows(engine)
    resolved_rows = Interactions(resolved_table)
    true_rows = Interactions(interaction_rows(engine, TRUE_PERSONS_SQL))
    reachable_map(engine)
    reachable_rows = Interactions(interaction_rows(engine, REACHABLE_PERSONS_SQL))
    served = {"online": _served_rows(engine, ONLINE), "store": _served_rows(engine, STORE)}
    served_reachable = {
        "online": _served_rows(engine, ONLINE, REACHABLE_PERSONS_SQL),
        "store": _served_rows(engine, STORE, REACHABLE_PERSONS_SQL),
    }
    future = pq.read_table(truth_dir / "future_purchases.parquet").to_pydict()
    products = sorted(set(resolved_rows.product_names.tolist()) | set(future["product_id"]))
    pidx = {p: i for i, p in enumerate(products)}
    orders = pq.read_table(truth_dir / "orders.parquet").to_pydict()
    bought: dict[str, set[int]] = {}
    for person, product, period in zip(orders["person_id"], orders["product_id"], orders["period"]):
        if period != "holdout" and product in pidx:
            bought.setdefault(person, set()).add(pidx[product])
    wanted: dict[str, dict[str, set[int]]] = {"online": {}, "store": {}}
    for person, product, channel in zip(future["person_id"], future["product_id"], future["channel"]):
        if pidx[product] in bought.get(person, ()):
            continue  # a repeat purchase: left out for every variant alike
        group = "store" if channel in STORE else "online"
        wanted[group].setdefault(person, set()).add(pidx[product])
    as_of = max(resolved_table.column("event_at").to_pylist()) if resolved_table.num_rows else None
    target_channels = {"online": ONLINE, "store": STORE}

    def variant(rows, cfg, by_truth: bool, inputs: dict[str, tuple[str, ...] | None], serve: dict | None = None):
        serve = serve or served
        everyone = sorted(set(rows.person_names.tolist()))
        out = {}
        for group, people in wanted.items():
            x_cfg = cfg.with_(channels=inputs[group])
            if inputs[group] is None:  # several channels in: how much the others count, chosen on validation
                x_cfg, out.setdefault("cross_channel_weight", {})[group] = _cross_weight(
                    rows, x_cfg, target_channels[group], products, make_model
                )
            X = build_matrix(rows, x_cfg, products=products, persons=everyone, as_of=as_of)
            Y = build_matrix(
                rows, cfg.with_(channels=target_channels[group]), products=products, persons=everyone, as_of=as_of
            )
            model = make_model().fit(X.matrix, Y.matrix)
            fallback = np.asarray(Y.matrix.sum(axis=0)).ravel()
            persons = sorted(people)
            hist = history_rows(X, [p if by_truth else serve[group].get(p) for p in persons], len(products))
            out[group] = judge(
                model, hist, fallback, [people[p] for p in persons], [bought.get(p, set()) for p in persons]
            )
        return out

    no_fine = tuple(s for s in SIGNALS if s not in FINE_GRAINED)
    every = {"online": None, "store": None}
    results = {
        "siloed": variant(resolved_rows, config, False, target_channels),
        "online only": variant(resolved_rows, config, False, {"online": ONLINE, "store": ONLINE}),
        "store only": variant(resolved_rows, config, False, {"online": STORE, "store": STORE}),
        "joined, no picks": variant(resolved_rows, config.with_(signals=no_fine), False, every),
        "joined": variant(resolved_rows, config, False, every),
        "ceiling, no picks": variant(true_rows, config.with_(signals=no_fine), True, every),
        "ceiling": variant(true_rows, config, True, every),
        "ceiling, reachable": variant(reachable_rows, config, False, every, served_reachable),
    }
    for _name, r in results.items():
        n = r["online"]["users"] + r["store"]["users"]
        r["all"] = {
            m: (r["online"][m] * r["online"]["users"] + r["store"][m] * r["store"]["users"]) / n if n else 0.0
            for m in ("ndcg@10", "recall@20", "map@10")
        }
        r["all"]["users"] = n
    base, got, top, reachable = (
        results[k]["all"]["ndcg@10"] for k in ("siloed", "joined", "ceiling", "ceiling, reachable")
    )

    def share(value: float, ceiling: float) -> float | None:
        return round((value - base) / (ceiling - base), 4) if ceiling > base else None

    return {
        "variants": results,
        "captured_share_of_ceiling_gain": share(got, top),
        "captured_share_of_reachable_ceiling_gain": share(got, reachable),
        "reachable_share_of_ceiling_gain": share(reachable, top),
        "model": make_model().describe(),
        "signals": {"weights": config.weights, "half_life_days": config.half_life_days},
        "chosen_on_validation": tuning is not None,
        "assumptions": ASSUMPTIONS,
    }


def save_chart(result: dict, path: Path) -> None:
    """Write the ablation's chart to ``path`` and note where in ``result``."""
    Path(path).write_text(ablation_svg(result))
    result["chart"] = str(path)


def ablation_svg(result: dict) -> str:
    """A grouped bar chart of NDCG@10 per variant, for online, store and all held-out purchases."""
    variants = list(result["variants"])
    groups = ["online", "store", "all"]
    colours = {"online": "#4C78A8", "store": "#F58518", "all": "#54A24B"}
    top = max(result["variants"][v][g]["ndcg@10"] for v in variants for g in groups) or 1.0
    width, height, left, bottom = max(760, 40 + 100 * len(variants)), 360, 60, 90
    band = (width - left - 20) / len(variants)
    bar = band / (len(groups) + 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<text x="{left}" y="18" font-size="13">NDCG@10 on held-out purchases, by how the data was joined</text>',
    ]
    plot_h = height - bottom - 30
    for j, v in enumerate(variants):
        x0 = left + j * band
        for g_i, g in enumerate(groups):
            val = result["variants"][v][g]["ndcg@10"]
            h = plot_h * val / top
            x = x0 + (g_i + 0.5) * bar
            y = height - bottom - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colours[g]}">'
                f"<title>{v}, {g}: {val:.4f}</title></rect>"
            )
        parts.append(f'<text x="{x0 + band / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">{v}</text>')
    for g_i, g in enumerate(groups):
        parts.append(
            f'<rect x="{left + g_i * 110}" y="{height - 40}" width="12" height="12" fill="{colours[g]}"/>'
            f'<text x="{left + g_i * 110 + 16}" y="{height - 30}">{g} purchases</text>'
        )
    parts.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - 20}" y2="{height - bottom}" stroke="#333"/>')
    parts.append("</svg>")
    return "\n".join(parts)
