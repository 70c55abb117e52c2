"""One person-by-product interaction table from every channel, through the identity map.

Signals: online views, cart adds and removes, orders on every channel (web, app, till, checkout-free
receipts, voice), and from checkout-free stores the picks and the picks put back. Each signal has a
weight and interactions may decay with age (``half_life_days``); both are configuration
(:class:`SignalConfig`).
A person's strength for a product is the sum over their interactions, floored at zero (a removal can
cancel an add but not go below nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from omnithread.engine.base import Engine
from omnithread.engine.tables import count_ok_sql, number_sql
from omnithread.identity.graph import EVENT_PERSONS_SQL

__all__ = [
    "SIGNALS",
    "forget_interactions",
    "SignalConfig",
    "interaction_rows",
    "Interactions",
    "InteractionMatrix",
    "build_matrix",
    "ONLINE",
    "STORE",
    "write_interactions_table",
    "ordered_products",
]

SIGNALS = ("view", "cart_add", "cart_remove", "order", "pick", "put_back")
ONLINE = ("web", "app", "voice")
STORE = ("store",)
FINE_GRAINED = ("pick", "put_back")

_EVENT_SIGNAL = {
    "Product Viewed": "view",
    "Product Added": "cart_add",
    "Product Removed": "cart_remove",
    "Product Picked": "pick",
    "Product Returned To Shelf": "put_back",
}


@dataclass(frozen=True)
class SignalConfig:
    """Which interactions count, and how much."""

    # Each kind of interaction counts once, removals not at all, no decay: of the three settings compared
    # on the demo world (this; orders five times views; weights 1-4 with a 30-day half-life) this one
    # ranked held-out purchases best (docs/recommend.md). Not yet chosen on a validation split.
    weights: dict = field(
        default_factory=lambda: {
            "view": 1.0,
            "cart_add": 1.0,
            "cart_remove": 0.0,
            "order": 1.0,
            "pick": 1.0,
            "put_back": 1.0,
        }
    )
    half_life_days: float | None = None
    channels: tuple[str, ...] | None = None  # None: every channel
    signals: tuple[str, ...] | None = None  # None: every signal
    channel_weights: dict | None = None  # channel -> multiplier (how much one channel's history counts)

    def with_(self, **changes) -> "SignalConfig":
        return replace(self, **changes)


def _rows_sql(persons_sql: str) -> str:
    cases = " ".join(f"WHEN '{e}' THEN '{s}'" for e, s in _EVENT_SIGNAL.items())
    return f"""
        WITH ep AS ({persons_sql})
        SELECT * FROM (
            SELECT person_id, properties->>'product_id' AS product_id, CASE event {cases} END AS signal,
                   channel, store_id, event_at, {number_sql("properties->>'quantity'", 1)} AS quantity
            FROM ep
            WHERE person_id IS NOT NULL AND event IN ({", ".join(f"'{e}'" for e in _EVENT_SIGNAL)})
                  AND properties->>'product_id' IS NOT NULL
            UNION ALL
            SELECT person_id, line->>'product_id' AS product_id, 'order' AS signal, channel, store_id, event_at,
                   {number_sql("line->>'quantity'", 1)} AS quantity
            FROM (SELECT *, unnest(TRY_CAST(properties->'products' AS JSON[])) AS line
                  FROM ep WHERE event = 'Order Completed' AND person_id IS NOT NULL)
            WHERE line->>'product_id' IS NOT NULL)
        WHERE {count_ok_sql("quantity")}  -- a count outside the schema's range is no signal"""


def interaction_rows(engine: Engine, persons_sql: str = EVENT_PERSONS_SQL, params=()) -> pa.Table:
    """Every interaction in the log as (person_id, product_id, signal, channel, store_id, event_at,
    quantity), each event given to its person by ``persons_sql`` (the identity map by default; ``params``
    fill its placeholders)."""
    return engine.query(_rows_sql(persons_sql) + " ORDER BY event_at, person_id, product_id", params)


@dataclass
class InteractionMatrix:
    """Persons by products, with the index of each."""

    matrix: sp.csr_matrix
    persons: list[str]
    products: list[str]

    def __post_init__(self) -> None:
        self.person_index = {p: i for i, p in enumerate(self.persons)}
        self.product_index = {p: i for i, p in enumerate(self.products)}

    def row(self, person: str) -> sp.csr_matrix:
        i = self.person_index.get(person)
        if i is None:
            return sp.csr_matrix((1, len(self.products)), dtype=np.float32)
        return self.matrix[i]


class Interactions:
    """Interaction rows as arrays, ready to be weighed many ways (validation tries several)."""

    def __init__(self, rows: pa.Table):
        d = rows.to_pydict()
        self.n = len(d["person_id"])
        self.person_names, self.person = (
            np.unique(np.array(d["person_id"], dtype=object), return_inverse=True)
            if self.n
            else (np.array([], dtype=object), np.zeros(0, np.int64))
        )
        self.product_names, self.product = (
            np.unique(np.array(d["product_id"], dtype=object), return_inverse=True)
            if self.n
            else (np.array([], dtype=object), np.zeros(0, np.int64))
        )
        self.signal = np.array(d["signal"], dtype=object)
        self.channel = np.array([c or "" for c in d["channel"]], dtype=object)
        self.at = np.array([t.timestamp() for t in d["event_at"]]) if self.n else np.zeros(0)
        self.quantity = np.minimum(np.array(d["quantity"], np.float64), 10) if self.n else np.zeros(0)

    def subset(self, keep: np.ndarray) -> "Interactions":
        """The same interactions, only those where ``keep`` is true (names and codes kept)."""
        out = object.__new__(Interactions)
        out.n = int(keep.sum())
        out.person_names, out.product_names = self.person_names, self.product_names
        for name in ("person", "product", "signal", "channel", "at", "quantity"):
            setattr(out, name, getattr(self, name)[keep])
        return out

    def matrix(
        self,
        config: SignalConfig = SignalConfig(),
        *,
        products: list[str] | None = None,
        persons: list[str] | None = None,
        as_of=None,
        floor: bool = True,
    ) -> InteractionMatrix:
        """Weigh, decay and sum into a matrix. ``products`` / ``persons`` fix the index (others are
        dropped); ``as_of`` is the moment decay counts from (default the newest interaction). Sums are
        floored at zero (a removal cannot make interest negative) and kept as float32, unless ``floor``
        is false (then float64, to be summed further: see ``omnithread.recommend.history``)."""
        keep = np.ones(self.n, bool)
        if config.channels is not None:
            keep &= np.isin(self.channel, list(config.channels))
        if config.signals is not None:
            keep &= np.isin(self.signal, list(config.signals))
        weight = np.zeros(self.n)
        for name, w in config.weights.items():
            weight[self.signal == name] = w
        weight = weight * np.where(self.signal == "order", self.quantity, 1.0)
        for name, w in (config.channel_weights or {}).items():
            weight[self.channel == name] *= w
        if config.half_life_days and self.n:
            now = as_of.timestamp() if as_of is not None else self.at.max()
            weight = weight * 0.5 ** (np.maximum(now - self.at, 0) / (config.half_life_days * 86400.0))
        keep &= weight != 0
        if products is None:
            products = sorted(set(self.product_names[np.unique(self.product[keep])].tolist()))
        if persons is None:
            persons = sorted(set(self.person_names[np.unique(self.person[keep])].tolist()))
        pi = {p: i for i, p in enumerate(products)}
        ui = {p: i for i, p in enumerate(persons)}
        product_map = np.array([pi.get(p, -1) for p in self.product_names.tolist()], np.int64)
        person_map = np.array([ui.get(p, -1) for p in self.person_names.tolist()], np.int64)
        rows_i = person_map[self.person[keep]] if self.n else np.zeros(0, np.int64)
        cols_i = product_map[self.product[keep]] if self.n else np.zeros(0, np.int64)
        ok = (rows_i >= 0) & (cols_i >= 0)
        m = sp.csr_matrix((weight[keep][ok], (rows_i[ok], cols_i[ok])), shape=(len(persons), len(products)))
        m.sum_duplicates()
        if floor:
            m.data = np.maximum(m.data, 0).astype(np.float32)
            m.eliminate_zeros()
        return InteractionMatrix(m, list(persons), list(products))


def build_matrix(
    rows: pa.Table | Interactions,
    config: SignalConfig = SignalConfig(),
    *,
    products: list[str] | None = None,
    persons: list[str] | None = None,
    as_of=None,
) -> InteractionMatrix:
    """Weigh, decay and sum ``rows`` into a matrix (see :meth:`Interactions.matrix`)."""
    data = rows if isinstance(rows, Interactions) else Interactions(rows)
    return data.matrix(config, products=products, persons=persons, as_of=as_of)


def ordered_products(rows: pa.Table, product_index: dict[str, int]) -> dict[str, set[int]]:
    """The indices (in ``product_index``) of the products each person (``person_id`` of ``rows``, interaction
    rows) ordered; products outside the index are left out."""
    import pyarrow.compute as pc

    ordered = rows.filter(pc.equal(rows["signal"], "order")).select(["person_id", "product_id"]).to_pydict()
    out: dict[str, set[int]] = {}
    for who, product in zip(ordered["person_id"], ordered["product_id"]):
        i = product_index.get(product)
        if i is not None:
            out.setdefault(who, set()).add(i)
    return out


def write_interactions_table(engine, rows: pa.Table, matrix: InteractionMatrix) -> int:
    """Write ``interactions``: one row per person and product, for analysts as much as for the model.

    Counts per signal (orders count units), the channels seen, the first and last time, and
    ``weight``, what the model was trained on (signal weights, decay and the floor at zero applied;
    0 where the weights leave a pair out). Returns the number of rows. A snapshot as of the training
    that wrote it: ``omnithread train`` writes it again."""
    coo = matrix.matrix.tocoo()
    weights = pa.table(
        {
            "person_id": pa.array([matrix.persons[i] for i in coo.row.tolist()], pa.string()),
            "product_id": pa.array([matrix.products[j] for j in coo.col.tolist()], pa.string()),
            "weight": pa.array(coo.data.astype(np.float64)),
        }
    )
    counts = ", ".join(
        f"sum(CASE WHEN signal = '{s}' THEN {'quantity' if s == 'order' else '1'} ELSE 0 END) AS "
        f"{'units_ordered' if s == 'order' else s + 's'}"
        for s in SIGNALS
    )
    engine.register(
        "_interaction_rows", rows.select(["person_id", "product_id", "signal", "channel", "event_at", "quantity"])
    )
    engine.register("_interaction_weights", weights)
    try:
        engine.execute(f"""
            CREATE OR REPLACE TABLE interactions AS
            SELECT r.*, coalesce(w.weight, 0) AS weight
            FROM (SELECT person_id, product_id, {counts},
                         list_sort(list(DISTINCT channel) FILTER (WHERE channel IS NOT NULL)) AS channels,
                         min(event_at) AS first_at, max(event_at) AS last_at
                  FROM _interaction_rows GROUP BY 1, 2) r
            LEFT JOIN _interaction_weights w USING (person_id, product_id)
            ORDER BY person_id, product_id""")
    finally:
        engine.unregister("_interaction_rows")
        engine.unregister("_interaction_weights")
    return engine.scalar("SELECT count(*) FROM interactions")


def forget_interactions(engine: Engine, person_ids: set[str]) -> int:
    """Delete the persons' rows of the ``interactions`` table (the last training's snapshot); returns how many."""
    if not engine.has_table("interactions") or not person_ids:
        return 0
    marks = ", ".join("?" for _ in person_ids)
    n = engine.scalar(f"SELECT count(*) FROM interactions WHERE person_id IN ({marks})", [*person_ids])
    if n:
        engine.execute(f"DELETE FROM interactions WHERE person_id IN ({marks})", [*person_ids])
    return n
