"""Serving recommendations on every surface, with the business rules and consent.

:class:`Recommendations` is trained from the event log (interactions of every channel through the
identity map) and saved in the data directory; requests are answered from the saved model and the
person's history, read at request time, so what they just did (a cart add, a put-back, walking into
a store) counts at once, without retraining (pass it as ``recent`` if it is not yet in the log).

Surfaces:

* ``for_you``: ranked for the person;
* ``similar``: items like one product;
* ``bought_together``: what goes with a basket (co-purchase in orders);
* ``in_store``: ranked for the person among products available at the store they are in;
* ``trending``: the most bought in the last ``trending_days`` (optionally at one store), for
  anonymous and new shoppers and for anyone whose consent says no to personalisation.

Business rules: products a person bought are not recommended again unless they are bought again
(products that at least ``repeat_share`` of their buyers bought more than once); nothing out of stock
where the shopper is: the imported inventory of that store (or of ``online``) says what is in stock
(``omnithread inventory``), and where none was imported, products not sold in the last
``available_days`` count as out of stock (each answer says which it used, ``meta.availability``);
nothing the catalogue marks off sale (``omnithread catalogue``); a person whose latest consent refuses
personalisation gets ``trending`` and the answer says why; a share ``new_product_share`` of the slots
go to new products, first seen in the log or launched (by the catalogue) in the last ``new_days``:
they have too little history to rank, and a launched product nobody has seen yet is shown too.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from omnithread.engine.base import Engine
from omnithread.errors import ConflictError, InvalidRequestError, NotFoundError, NothingToTrainError
from omnithread.identity.graph import EVENT_PERSONS_SQL
from omnithread.identity.lookup import find_person
from omnithread.ingest.reference import ONLINE_LOCATION, catalogue_facts, stock_levels
from omnithread.recommend.history import HistoryCache
from omnithread.recommend.interactions import (
    SignalConfig,
    build_matrix,
    interaction_rows,
    ordered_products,
    write_interactions_table,
)
from omnithread.recommend.models import DLAE, FORMAT_VERSION, MODELS, Recommender, load_model, top_n
from omnithread.recommend.tuning import tune

__all__ = ["ServingConfig", "Recommendations", "SURFACES"]

SURFACES = ("for_you", "similar", "bought_together", "in_store", "trending")


@dataclass(frozen=True)
class ServingConfig:
    trending_days: float = 7.0
    available_days: float = 30.0
    new_days: float = 7.0
    new_product_share: float = 0.1
    repeat_share: float = 0.2
    # store-wide facts (sales, stock, new products, the newest event) are read again after this long,
    # so a long-running service follows the log without reading them on every request
    refresh_seconds: float = 60.0


@dataclass
class Answer:
    """What a request returns: the surface actually served, the items, and why if it fell back."""

    surface: str
    items: list[dict]
    person_id: str | None = None
    fallback_reason: str | None = None
    meta: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class Recommendations:
    """Train with :meth:`train`, reopen with :meth:`open`, answer with :meth:`recommend`."""

    def __init__(
        self,
        engine: Engine,
        pseudonymiser,
        directory: Path,
        model: Recommender,
        products: list[str],
        persons: list[str],
        signals: SignalConfig,
        serving: ServingConfig,
        stats: dict,
    ):
        self.engine, self.pseudonymiser, self.directory, self.model = engine, pseudonymiser, Path(directory), model
        self.products, self.persons, self.signals, self.serving, self.stats = products, persons, signals, serving, stats
        self.product_index = {p: i for i, p in enumerate(products)}
        self.person_index = {p: i for i, p in enumerate(persons)}
        self.tuning: dict | None = None  # how training chose signals and model (set by train)
        self._memo: dict = {}  # store-wide facts read from the log once (see refresh)
        self._memo_at = time.monotonic()
        self._rows_for: tuple = (None, None)  # the person of this request and their interactions
        self.history: HistoryCache | None = None  # each identifier's interactions, summed at training
        self._cached_for: tuple = (None, None)  # the person of this request, their history row and purchases

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls,
        engine: Engine,
        pseudonymiser,
        directory: Path,
        model: Recommender | None = None,
        signals: SignalConfig | None = None,
        serving: ServingConfig = ServingConfig(),
        tune_days: float | None = 7.0,
    ) -> "Recommendations":
        """Train on the whole log. Unless ``model`` and ``signals`` are given, both are chosen on a
        validation split of the log (its last ``tune_days``), then refit on everything."""

        rows = interaction_rows(engine)
        if rows.num_rows == 0:
            raise NothingToTrainError()
        tuning = None
        if (model is None or signals is None) and tune_days:
            tuning = tune(engine, tune_days)
            signals = signals or tuning["config"]
            model = model or MODELS[tuning["model"]](**tuning["params"])
        signals = signals or SignalConfig()
        matrix = build_matrix(rows, signals)
        model = (model or DLAE(lam=100.0, dropout=0.33)).fit(matrix.matrix)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model.save(directory / "model.npz")
        history = HistoryCache.build(engine, signals, matrix.products)
        history.save(directory)
        write_interactions_table(engine, rows, matrix)
        stats = {
            "format": FORMAT_VERSION,
            "persons": len(matrix.persons),
            "products": len(matrix.products),
            "interactions": int(matrix.matrix.nnz),
            "model": model.describe(),
            "fit_seconds": round(model.fit_seconds, 3),
            "signals": asdict(signals),
            "tuning": None if tuning is None else {k: v for k, v in tuning.items() if k != "config"},
        }
        (directory / "index.json").write_text(
            json.dumps(
                {
                    "products": matrix.products,
                    "persons": matrix.persons,
                    "signals": asdict(signals),
                    "serving": asdict(serving),
                    "stats": stats,
                }
            )
        )
        service = cls(engine, pseudonymiser, directory, model, matrix.products, matrix.persons, signals, serving, stats)
        service.tuning = tuning
        service.history = history
        return service

    @classmethod
    def open(cls, engine: Engine, pseudonymiser, directory: Path) -> "Recommendations":
        directory = Path(directory)
        index_path = directory / "index.json"
        if not index_path.is_file():
            raise NotFoundError("trained recommendation model in", str(directory))
        index = json.loads(index_path.read_text())
        if index.get("stats", {}).get("format") != FORMAT_VERSION:
            raise ConflictError(
                f"the model in {directory} was saved by another version of omnithread",
                "run `omnithread train` again with this version",
            )
        model = load_model(directory / "model.npz")
        service = cls(
            engine,
            pseudonymiser,
            directory,
            model,
            index["products"],
            index["persons"],
            SignalConfig(**index["signals"]),
            ServingConfig(**index["serving"]),
            index["stats"],
        )
        service.history = HistoryCache.load(directory)
        return service

    @classmethod
    def open_or_train(cls, engine: Engine, pseudonymiser, directory: Path) -> "Recommendations":
        """The model trained in ``directory``, trained there first if there is none yet."""
        try:
            return cls.open(engine, pseudonymiser, directory)
        except NotFoundError:
            return cls.train(engine, pseudonymiser, directory)

    # ------------------------------------------------------------------ facts read at request time

    def _resolve_person(self, key: str) -> str | None:

        try:
            return find_person(self.engine, key, self.pseudonymiser)
        except NotFoundError:
            return None

    def _person_rows(self, person: str):
        """The person's interactions: events naming one of their identifiers are found first (cheap),
        then given to persons exactly as everywhere else, and kept if they are theirs."""
        if self._rows_for[0] == person:
            return self._rows_for[1]
        candidates = """(SELECT * FROM events WHERE user_id IN (
                            SELECT substr(identifier, 9) FROM identity_map
                            WHERE person_id = ? AND identifier LIKE 'account:%')
                         OR anonymous_id IN (
                            SELECT substr(identifier, strpos(identifier, ':') + 1) FROM identity_map
                            WHERE person_id = ? AND (identifier LIKE 'device:%' OR identifier LIKE 'store_session:%'
                                                     OR identifier LIKE 'voice_device:%')))"""
        sql = EVENT_PERSONS_SQL.replace("FROM events e", f"FROM {candidates} e")
        table = interaction_rows(self.engine, f"SELECT * FROM ({sql}) WHERE person_id = ?", [person, person, person])
        self._rows_for = (person, table)
        return table

    def _latest(self):
        if "latest" not in self._memo:  # decay counts from the log's newest event, as in training
            self._memo["latest"] = self.engine.scalar("SELECT max(event_at) FROM events")
        return self._memo["latest"]

    def _cached(self, person: str) -> tuple[sp.csr_matrix, set[int]]:
        """History row and purchases from the identifiers' rows summed at training plus what was loaded
        since (see ``omnithread.recommend.history``)."""
        if self._cached_for[0] != person:
            identifiers = [
                r["identifier"]
                for r in self.engine.rows("SELECT identifier FROM identity_map WHERE person_id = ?", [person])
            ]
            self._cached_for = (
                person,
                self.history.person(self.engine, identifiers, self.signals, self.products, self._latest()),
            )
        return self._cached_for[1]

    def _history(self, person: str, recent: list[dict] | None) -> sp.csr_matrix:
        if self.history is not None:
            row = self._cached(person)[0]
        else:  # a model saved without the cache: read the person's events from the log
            table = self._person_rows(person)
            row = build_matrix(
                table, self.signals, products=self.products, persons=[person], as_of=self._latest()
            ).matrix
        for ev in recent or []:
            i = self.product_index.get(ev.get("product_id"))
            w = self.signals.weights.get(ev.get("signal", ""), 0.0)
            if i is not None and w:
                row = row + sp.csr_matrix(([w], ([0], [i])), shape=row.shape, dtype=np.float32)
        row.data = np.maximum(row.data, 0)
        return sp.csr_matrix(row)

    def _bought(self, person: str) -> set[int]:
        if self.history is not None:
            return set(self._cached(person)[1])
        return ordered_products(self._person_rows(person), self.product_index).get(person, set())

    def _repeatable(self) -> set[int]:
        if "repeat" not in self._memo:
            rows = self.engine.rows(
                f"""
                WITH lines AS (SELECT person_id, line->>'product_id' AS product_id, count(*) AS n
                    FROM (SELECT person_id, unnest(TRY_CAST(properties->'products' AS JSON[])) AS line
                          FROM ({EVENT_PERSONS_SQL}) WHERE event = 'Order Completed' AND person_id IS NOT NULL)
                    GROUP BY 1, 2)
                SELECT product_id FROM lines GROUP BY product_id
                HAVING avg(CASE WHEN n > 1 THEN 1 ELSE 0 END) >= ?""",
                [self.serving.repeat_share],
            )
            self._memo["repeat"] = {
                self.product_index[r["product_id"]] for r in rows if r["product_id"] in self.product_index
            }
        return self._memo["repeat"]

    def refresh(self) -> None:
        """Forget the store-wide facts read from the log (sales, repeat buying, new products, catalogue
        and stock); they are read again when next needed. Happens by itself every ``refresh_seconds``."""
        self._memo = {}
        self._memo_at = time.monotonic()

    def _sold(self, days: float, store: str | None = None) -> np.ndarray:
        """Units sold per product in the last ``days`` (at ``store``); read once, then kept (see refresh)."""
        key = ("sold", days, store)
        if key not in self._memo:
            self._memo[key] = self._read_sold(days, store)
        return self._memo[key]

    def _read_sold(self, days: float, store: str | None = None) -> np.ndarray:
        where = "AND store_id = ?" if store else ""
        params = [days] + ([store] if store else [])
        rows = self.engine.rows(
            f"""
            WITH latest AS (SELECT max(event_at) AS t FROM events)
            SELECT line->>'product_id' AS product_id, sum(coalesce(TRY_CAST(line->>'quantity' AS DOUBLE), 1)) AS units
            FROM (SELECT store_id, event_at, unnest(TRY_CAST(properties->'products' AS JSON[])) AS line FROM events
                  WHERE event = 'Order Completed')
            WHERE event_at >= (SELECT t FROM latest) - to_seconds(CAST(? * 86400 AS BIGINT)) {where}
            GROUP BY 1""",
            params,
        )
        out = np.zeros(len(self.products))
        for r in rows:
            i = self.product_index.get(r["product_id"])
            if i is not None:
                out[i] = r["units"]
        return out

    def _catalogue(self) -> dict:
        if "catalogue" not in self._memo:
            self._memo["catalogue"] = catalogue_facts(self.engine)
        return self._memo["catalogue"]

    def _stock(self, location: str) -> dict[str, float] | None:
        key = ("stock", location)
        if key not in self._memo:
            self._memo[key] = stock_levels(self.engine, location)
        return self._memo[key]

    def _availability(self, store: str | None = None) -> tuple[np.ndarray, str]:
        """Which of the model's products may be served at ``store`` (else online), and how that is known:
        from the inventory imported for that location (units above 0) when there is one, else from sales
        there (anywhere, online) in the last ``available_days``; never what the catalogue marks off sale."""
        key = ("available", store)
        if key not in self._memo:
            allows = self._allows(store)
            mask = np.array([allows(p) for p in self.products], bool)
            if self._stock(store or ONLINE_LOCATION) is not None:
                source = f"inventory of {store or ONLINE_LOCATION}"
            else:
                mask &= self._sold(self.serving.available_days, store) > 0
                source = f"sales of the last {self.serving.available_days:g} days" + (f" at {store}" if store else "")
            self._memo[key] = (mask, source)
        return self._memo[key]

    def _allows(self, store: str | None = None):
        """What the imported feeds allow at ``store`` (else online), as a test of a product id: not off sale
        in the catalogue, and in stock there if stock was imported for that location."""
        stock, off = self._stock(store or ONLINE_LOCATION), self._catalogue()["unavailable"]
        return lambda product: product not in off and (stock is None or stock.get(product, 0) > 0)

    def _new_products(self, store: str | None = None) -> list[str]:
        """New products that may be served at ``store`` (else online), newest first: first seen in the log
        in the last ``new_days``, or launched then by the catalogue (a product nobody has seen yet)."""
        key = ("new", store)
        if key not in self._memo:
            stocked, _ = self._availability(store)
            allows = self._allows(store)  # a product the model does not know has no sales to go by
            self._memo[key] = [
                p
                for p in self._read_new_products()
                if (stocked[self.product_index[p]] if p in self.product_index else allows(p))
            ]
        return self._memo[key]

    def _read_new_products(self) -> list[str]:
        if "new_products" in self._memo:
            return self._memo["new_products"]
        latest = self.engine.scalar("SELECT max(event_at) FROM events")
        rows = (
            self.engine.rows(
                """
            WITH firsts AS (SELECT properties->>'product_id' AS product_id, min(event_at) AS first_at FROM events
                            WHERE properties->>'product_id' IS NOT NULL GROUP BY 1)
            SELECT product_id, first_at FROM firsts WHERE first_at >= ?::TIMESTAMPTZ - to_seconds(CAST(? AS BIGINT))
            """,
                [latest, int(self.serving.new_days * 86400)],
            )
            if latest is not None
            else []
        )
        seen = {r["product_id"]: r["first_at"] for r in rows if r["product_id"] in self.product_index}
        if latest is not None:
            since = latest - timedelta(days=self.serving.new_days)
            for product, launched in self._catalogue()["launched"].items():
                if since <= launched <= latest and (product in seen or product not in self.product_index):
                    seen[product] = max(seen.get(product, launched), launched)
        self._memo["new_products"] = sorted(seen, key=lambda p: (-seen[p].timestamp(), p))
        return self._memo["new_products"]

    def consent_refuses_personalisation(self, person: str) -> bool:
        try:
            row = self.engine.rows("SELECT consent_personalisation FROM profiles WHERE person_id = ?", [person])
        except Exception:  # noqa: BLE001 - no profiles table yet: no recorded refusal
            return False
        return bool(row) and row[0]["consent_personalisation"] is False

    # ------------------------------------------------------------------ answers

    def _items(self, idx, scores=None) -> list[dict]:
        return [
            {"product_id": self.products[i], **({"score": round(float(scores[i]), 5)} if scores is not None else {})}
            for i in idx
        ]

    def trending(self, n: int = 10, store: str | None = None, exclude=()) -> Answer:
        sold = self._sold(self.serving.trending_days, store)
        if not sold.any():
            sold = self._sold(3650, store)  # a quiet week: all-time best sellers
        stock = self._stock(store or ONLINE_LOCATION)
        if stock is not None or self._catalogue()["unavailable"]:
            allows = self._allows(store)  # what sold lately is on the shelf unless the inventory or catalogue says not
            sold = np.where([allows(p) for p in self.products], sold, -np.inf)
        idx = top_n(sold, n, list(exclude))
        return Answer(
            "trending",
            self._items(idx, sold),
            meta={
                "store": store,
                "days": self.serving.trending_days,
                "availability": f"inventory of {store or ONLINE_LOCATION}" if stock is not None else "recent sales",
            },
        )

    def recommend(
        self,
        key: str | None = None,
        surface: str = "for_you",
        n: int = 10,
        store: str | None = None,
        product: str | None = None,
        basket: list[str] | None = None,
        recent: list[dict] | None = None,
    ) -> Answer:
        # the person's rows are read once per request, never reused across requests
        self._rows_for, self._cached_for = (None, None), (None, None)
        if time.monotonic() - self._memo_at >= self.serving.refresh_seconds:
            self.refresh()
        if surface not in SURFACES:
            raise InvalidRequestError("surface", surface, f"one of {', '.join(SURFACES)}")
        if n < 1 or n > 500:
            raise InvalidRequestError("n", n, "between 1 and 500")
        if surface == "trending":
            return self.trending(n, store)
        if surface == "similar":
            i = self.product_index.get(product or "")
            if i is None:
                raise NotFoundError("product", product)
            available, source = self._availability()
            idx = [j for j in self.model.similar_items(i, n * 3).tolist() if available[j]][:n]
            return Answer("similar", self._items(idx), meta={"product": product, "availability": source})
        if surface == "bought_together":
            return self._bought_together(basket or ([product] if product else []), n)
        person = self._resolve_person(key) if key else None
        if person is None:
            answer = self.trending(n, store)
            answer.fallback_reason = (
                "unknown person: served the non-personal surface"
                if key
                else "anonymous: served the non-personal surface"
            )
            return answer
        if surface == "in_store" and not store:
            raise InvalidRequestError("store", None, "a store for the in_store surface")
        if self.consent_refuses_personalisation(person):
            return self._non_personal(person, n, store, "consent refuses personalisation")
        history = self._history(person, recent)
        if not history.nnz:
            return self._non_personal(person, n, store, "no history yet")
        return self._personal(
            person,
            surface,
            n,
            store,
            self.model.scores(history)[0].astype(np.float64),
            self._bought(person) - self._repeatable(),
            int(history.nnz),
        )

    def _non_personal(self, person: str, n: int, store: str | None, why: str) -> Answer:
        answer = self.trending(n, store)
        answer.person_id = person
        answer.fallback_reason = f"{why}: served the non-personal surface"
        return answer

    def _personal(
        self,
        person: str,
        surface: str,
        n: int,
        store: str | None,
        scores: np.ndarray,
        exclude: set[int],
        history_items: int,
    ) -> Answer:
        """The answer for a person from their model scores (changed in place): the business rules applied."""
        if surface == "in_store":
            stocked, source = self._availability(store)
            if not stocked.any():
                answer = self.trending(n, None, exclude)
                answer.person_id = person
                answer.fallback_reason = (
                    f"nothing in stock at store {store} by its {source}: served overall trending"
                    if source.startswith("inventory")
                    else f"no known inventory at store {store}: served overall trending"
                )
                return answer
        else:
            store = None  # for_you: what can be bought online
            stocked, source = self._availability()
        scores[~stocked] = -np.inf
        idx = top_n(scores, n, list(exclude)).tolist()
        chosen = {self.products[i] for i in idx} | {self.products[i] for i in exclude}
        new = [p for p in self._new_products(store) if p not in chosen]
        slots = min(int(round(n * self.serving.new_product_share)), len(new))
        shown = np.where(np.isfinite(scores), scores, 0.0)
        items = self._items(idx[: n - slots], shown)
        items += [
            {
                "product_id": p,
                "score": round(float(shown[self.product_index[p]]), 5) if p in self.product_index else 0.0,
                "new": True,
            }
            for p in new[:slots]
        ]
        return Answer(
            surface,
            items,
            person,
            meta={"store": store, "history_items": history_items, "new_products_shown": slots, "availability": source},
        )

    def recommend_all(self, surface: str = "for_you", n: int = 10, store: str | None = None, block: int = 2048):
        """Answers for every person the identity map knows, computed together (for a campaign, an export,
        a cache): the same answers a request for each would get, read from one scan of the log and scored
        a block of persons at a time. Yields :class:`Answer` objects, persons in sorted order."""
        if surface not in ("for_you", "in_store"):
            raise InvalidRequestError("surface", surface, "for_you or in_store for every person")
        if n < 1 or n > 500:
            raise InvalidRequestError("n", n, "between 1 and 500")
        if surface == "in_store" and not store:
            raise InvalidRequestError("store", None, "a store for the in_store surface")
        persons = [
            r["person_id"]
            for r in self.engine.rows(
                "SELECT DISTINCT person_id FROM identity_map WHERE person_id IS NOT NULL ORDER BY person_id"
            )
        ]
        try:
            refusing = {
                r["person_id"]
                for r in self.engine.rows("SELECT person_id FROM profiles WHERE consent_personalisation = false")
            }
        except Exception:  # noqa: BLE001 - no profiles table yet: no recorded refusal
            refusing = set()
        rows = interaction_rows(self.engine)
        X = build_matrix(rows, self.signals, products=self.products, persons=persons, as_of=self._latest()).matrix
        repeatable = self._repeatable()
        bought = ordered_products(rows, self.product_index)
        for start in range(0, len(persons), block):
            names = persons[start : start + block]
            H = X[start : start + block]
            scores = self.model.scores(H).astype(np.float64) if H.nnz else None
            counts = np.diff(H.indptr)
            for row, person in enumerate(names):
                if person in refusing:
                    yield self._non_personal(person, n, store, "consent refuses personalisation")
                elif not counts[row]:
                    yield self._non_personal(person, n, store, "no history yet")
                else:
                    yield self._personal(
                        person, surface, n, store, scores[row], bought.get(person, set()) - repeatable, int(counts[row])
                    )

    def export_all(self, path: Path | str, surface: str = "for_you", n: int = 10, store: str | None = None) -> dict:
        """Write :meth:`recommend_all`'s answers to a Parquet file, one row per person and rank
        (person_id, rank, product_id, score, new, surface, fallback_reason); returns a summary."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        started = time.perf_counter()
        columns: dict[str, list] = {
            k: [] for k in ("person_id", "rank", "product_id", "score", "new", "surface", "fallback_reason")
        }
        persons, reasons = 0, {}
        for answer in self.recommend_all(surface, n, store):
            persons += 1
            if answer.fallback_reason:
                why = answer.fallback_reason.split(":")[0]
                reasons[why] = reasons.get(why, 0) + 1
            for rank, item in enumerate(answer.items, start=1):
                for key, value in (
                    ("person_id", answer.person_id),
                    ("rank", rank),
                    ("product_id", item["product_id"]),
                    ("score", item.get("score")),
                    ("new", bool(item.get("new"))),
                    ("surface", answer.surface),
                    ("fallback_reason", answer.fallback_reason),
                ):
                    columns[key].append(value)
        schema = pa.schema(
            [
                ("person_id", pa.string()),
                ("rank", pa.int16()),
                ("product_id", pa.string()),
                ("score", pa.float64()),
                ("new", pa.bool_()),
                ("surface", pa.string()),
                ("fallback_reason", pa.string()),
            ]
        )
        pq.write_table(pa.table(columns, schema=schema), path)
        seconds = time.perf_counter() - started
        return {
            "path": str(path),
            "persons": persons,
            "rows": len(columns["person_id"]),
            "personal": persons - sum(reasons.values()),
            "non_personal_by_reason": reasons,
            "seconds": round(seconds, 2),
            "persons_per_second": round(persons / seconds, 1) if seconds else None,
        }

    def _bought_together(self, basket: list[str], n: int) -> Answer:
        idx = [self.product_index[p] for p in basket if p in self.product_index]
        if not idx:
            raise NotFoundError("product in the basket", ", ".join(basket) or "(empty)")
        if "co" not in self._memo:
            rows = self.engine.rows("""
                SELECT message_id, line->>'product_id' AS product_id
                FROM (SELECT message_id, unnest(TRY_CAST(properties->'products' AS JSON[])) AS line FROM events
                      WHERE event = 'Order Completed')""")
            orders, items = [], []
            ids: dict[str, int] = {}
            for r in rows:
                j = self.product_index.get(r["product_id"])
                if j is not None:
                    orders.append(ids.setdefault(r["message_id"], len(ids)))
                    items.append(j)
            ordered = sp.csr_matrix(
                (np.ones(len(items), np.float32), (orders, items)), shape=(len(ids), len(self.products))
            )
            ordered.data[:] = 1
            co = (ordered.T @ ordered).tocsr()
            co.setdiag(0)
            self._memo["co"] = co
        scores = np.asarray(self._memo["co"][idx].sum(axis=0)).ravel().astype(np.float64)
        available, source = self._availability()
        scores[~available] = 0
        top = [i for i in top_n(scores, n, idx).tolist() if scores[i] > 0]
        return Answer("bought_together", self._items(top, scores), meta={"basket": basket, "availability": source})
