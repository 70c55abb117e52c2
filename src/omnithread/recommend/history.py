"""Each identifier's interactions, summed once, so a request does not read the whole log.

A request needs the person's history: every interaction of every identifier the person holds. Read
from the log, that is a scan of every event, which grows with the log (a for_you request took 19 ms
p50 on 178,000 events and 88 ms on 1.76 million; ``benchmarks/recommend_serving.py``). Instead,
training sums each identifier's interactions (an account's, a device's, a store visit's) into a row,
weighted and decayed as the model's signals say, and keeps the rows beside the model with the moment
they were read to (the newest ``loaded_at``). A request then adds the rows
of the identifiers the identity map gives the person *now*, so merges and splits since training count
at once, plus the events loaded since (a scan the log's zone maps limit to its newest part).

Summing by identifier first is exact: each event belongs to one identifier (its account when it has
a ``userId`` that is someone's, else its anonymous id), which is how the log gives events to persons
(``EVENT_PERSONS_SQL``; an account that is blocked, or stops being, between training and a request is
the one case where the two part, until the next training); weights add; decay is exponential, so rows
summed as of ``T0`` are the rows as of ``T1`` times ``0.5 ** ((T1 - T0) / half_life)``; negative sums
(removals) are floored at zero only once the person's rows are added. A test holds it equal to reading the log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from omnithread.engine.base import Engine
from omnithread.recommend.interactions import Interactions, SignalConfig, interaction_rows, ordered_products

__all__ = ["HistoryCache", "IDENTIFIER_SQL"]

# the identifier an event belongs to, as EVENT_PERSONS_SQL reads it: its account when the account is
# someone's (a blocked one such as 'undefined' is nobody's), else its anonymous id
IDENTIFIER_SQL = """CASE WHEN a.person_id IS NOT NULL THEN 'account:' || e.user_id
     WHEN e.anonymous_id IS NOT NULL THEN (CASE e.channel WHEN 'store' THEN 'store_session:'
          WHEN 'voice' THEN 'voice_device:' ELSE 'device:' END) || e.anonymous_id END"""
_FROM = "events e LEFT JOIN identity_map a ON a.identifier = 'account:' || e.user_id"
_BY_IDENTIFIER = f"SELECT e.*, {IDENTIFIER_SQL} AS person_id FROM {_FROM}"
_FILE, _META = "history.npz", "history.json"


@dataclass
class HistoryCache:
    """Rows of interactions per identifier (``rows``, unfloored and decayed as of ``as_of``) and of
    orders (``orders``: products bought), read from the log up to ``through`` (a ``loaded_at``)."""

    identifiers: list[str]
    rows: sp.csr_matrix
    orders: sp.csr_matrix
    through: datetime | None
    as_of: datetime | None

    def __post_init__(self) -> None:
        self.index = {name: i for i, name in enumerate(self.identifiers)}

    @classmethod
    def build(cls, engine: Engine, signals: SignalConfig, products: list[str]) -> "HistoryCache":
        through = engine.scalar("SELECT max(loaded_at) FROM events")
        as_of = engine.scalar("SELECT max(event_at) FROM events")
        table = interaction_rows(engine, _BY_IDENTIFIER + " WHERE e.loaded_at <= ?", [through]) if through else None
        data = Interactions(table) if table is not None and table.num_rows else None
        identifiers = sorted(data.person_names.tolist()) if data else []
        rows = _sum(data, signals, products, identifiers, as_of)
        bought = ordered_products(table, {p: i for i, p in enumerate(products)}) if data else {}
        index = {p: i for i, p in enumerate(identifiers)}
        r = [index[who] for who, ordered in bought.items() for _ in ordered]
        c = [j for ordered in bought.values() for j in ordered]
        orders = sp.csr_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(identifiers), len(products)))
        return cls(identifiers, rows, orders, through, as_of)

    # -- kept beside the model
    def save(self, directory: Path) -> None:
        np.savez_compressed(
            Path(directory) / _FILE,
            data=self.rows.data,
            indices=self.rows.indices,
            indptr=self.rows.indptr,
            o_indices=self.orders.indices,
            o_indptr=self.orders.indptr,
            shape=np.array(self.rows.shape),
        )
        (Path(directory) / _META).write_text(
            json.dumps(
                {
                    "identifiers": self.identifiers,
                    "through": self.through.isoformat() if self.through else None,
                    "as_of": self.as_of.isoformat() if self.as_of else None,
                }
            )
        )

    @classmethod
    def load(cls, directory: Path) -> "HistoryCache | None":
        """The cache saved in ``directory``, or ``None`` if there is none (a model trained before it)."""
        if not (Path(directory) / _FILE).is_file() or not (Path(directory) / _META).is_file():
            return None
        meta = json.loads((Path(directory) / _META).read_text())
        with np.load(Path(directory) / _FILE) as z:
            shape = tuple(z["shape"])
            rows = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            orders = sp.csr_matrix((np.ones(len(z["o_indices"]), np.int8), z["o_indices"], z["o_indptr"]), shape=shape)
        stamp = lambda s: datetime.fromisoformat(s) if s else None  # noqa: E731
        return cls(meta["identifiers"], rows, orders, stamp(meta["through"]), stamp(meta["as_of"]))

    # -- a person's history, now
    def person(
        self, engine: Engine, identifiers: list[str], signals: SignalConfig, products: list[str], as_of: datetime | None
    ) -> tuple[sp.csr_matrix, set[int]]:
        """The history row (floored, float32) and the bought product indices of a person who holds
        ``identifiers`` today: their summed rows, decayed to ``as_of``, plus what was loaded since."""
        known = [self.index[i] for i in identifiers if i in self.index]
        row = np.asarray(self.rows[known].sum(axis=0)).ravel() if known else np.zeros(len(products))
        if known and signals.half_life_days and as_of is not None and self.as_of is not None:
            row = row * 0.5 ** (max((as_of - self.as_of).total_seconds(), 0.0) / (signals.half_life_days * 86400.0))
        bought = set(self.orders[known].indices.tolist()) if known else set()
        since = "" if self.through is None else "e.loaded_at > ? AND "
        after = [self.through] if self.through is not None else []
        params = after + [identifiers]
        mine = f"{since}list_contains(?::VARCHAR[], {IDENTIFIER_SQL})"
        # most requests find nothing new: asking first (on the raw ids, without the identity map) costs a
        # fraction of reading the interactions
        accounts = [i.split(":", 1)[1] for i in identifiers if i.startswith("account:")]
        anonymous = [i.split(":", 1)[1] for i in identifiers if not i.startswith("account:")]
        if identifiers and engine.scalar(
            f"SELECT count(*) FROM (SELECT 1 FROM events e WHERE {since}(list_contains(?::VARCHAR[], e.user_id) "
            f"OR list_contains(?::VARCHAR[], e.anonymous_id)) LIMIT 1)",
            after + [accounts, anonymous],
        ):
            table = interaction_rows(engine, f"SELECT * FROM ({_BY_IDENTIFIER} WHERE {mine})", params)
            if table.num_rows:
                data = Interactions(table)
                new = _sum(data, signals, products, None, as_of)
                row = row + np.asarray(new.sum(axis=0)).ravel()
                for more in ordered_products(table, {p: i for i, p in enumerate(products)}).values():
                    bought |= more
        row = np.maximum(row, 0).astype(np.float32)
        return sp.csr_matrix(row.reshape(1, -1)), bought


def _sum(
    data: Interactions | None, signals: SignalConfig, products: list[str], persons: list[str] | None, as_of
) -> sp.csr_matrix:
    """Weighted, decayed sums per person (here, per identifier) and product, not floored; float64."""
    if data is None:
        return sp.csr_matrix((len(persons or []), len(products)), dtype=np.float64)
    return data.matrix(signals, products=products, persons=persons, as_of=as_of, floor=False).matrix
