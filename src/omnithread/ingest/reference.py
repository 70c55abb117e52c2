"""Reference data the serve stage reads beside the event log: the product catalogue and stock levels.

A retailer's product information system exports the **catalogue** (one row per product: its name,
category, price, whether it is on sale at all, when it was launched) and its stock system the
**inventory** (one row per location and product: units in stock, as of when). Recommendations
read both: nothing discontinued or out of stock where the shopper is, and products launched in the
last days get their share of exposure even before anyone has viewed them.

Both import from CSV (a header row), JSON Lines (one object per line) or Parquet, through the same
door as events: every row is checked, a refused row is kept in ``rejected_events`` with each
reason naming the line, the column and the value (format ``catalogue_row`` or ``inventory_row``)
and can be replayed after a fix. A catalogue row replaces the stored row of its product; an
inventory row replaces the stored row of its location and product unless that one is newer (a
late export does not undo a later count). Location ``online`` is the web shop's stock; a store's
id is its ``store_id`` in events. Neither table holds anything about a person.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Iterator

import orjson
import pyarrow as pa

from omnithread.engine.base import Engine
from omnithread.errors import Problem
from omnithread.events.schema import MAX_COUNT, MAX_MONEY
from omnithread.events.validate import show

__all__ = [
    "KINDS",
    "ONLINE_LOCATION",
    "COLUMNS",
    "REQUIRED",
    "check_row",
    "read_rows",
    "parse_line",
    "ensure_reference_tables",
    "location_stock",
    "write_rows",
    "stock_levels",
    "catalogue_facts",
    "reference_summary",
]

KINDS = ("catalogue", "inventory")
ONLINE_LOCATION = "online"

# column -> kind of value; the required ones first
COLUMNS = {
    "catalogue": {
        "product_id": "text",
        "name": "text",
        "category": "text",
        "price": "number",
        "available": "boolean",
        "launched_at": "time",
    },
    "inventory": {"store_id": "text", "product_id": "text", "quantity": "number", "as_of": "time"},
}
REQUIRED = {"catalogue": ("product_id",), "inventory": ("store_id", "product_id", "quantity")}
# the events' own ranges: a price at most a billion, a stock count at most a million units
REFERENCE_MAXIMUM = {"price": MAX_MONEY, "quantity": MAX_COUNT}
KEYS = {"catalogue": ("product_id",), "inventory": ("store_id", "product_id")}

_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}
_SQL_TYPES = {"text": "VARCHAR", "number": "DOUBLE", "boolean": "BOOLEAN", "time": "TIMESTAMPTZ"}


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def check_row(
    kind: str, row: dict, line: int, now: datetime, max_ahead: timedelta = timedelta(days=1)
) -> tuple[dict | None, list[Problem]]:
    """The row's clean values, or every problem with it, each naming the line, the column and the value.

    Unknown columns are ignored; a blank optional value is missing. ``available`` defaults to true;
    an inventory row without ``as_of`` counts as of ``now``, and one more than ``max_ahead`` past it
    is refused (a clock that is wrong would otherwise pin that count for good).
    """
    problems: list[Problem] = []
    clean: dict[str, object] = {}
    for column in REQUIRED[kind]:
        if _blank(row.get(column)):
            problems.append(
                Problem(
                    "missing_field", column, show(row.get(column, "")), f"line {line}: {column} is empty or missing"
                )
            )
    for column, sort in COLUMNS[kind].items():
        value = row.get(column)
        if _blank(value):
            clean[column] = None
            continue
        if sort == "text":
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                problems.append(
                    Problem("invalid_type", column, show(value), f"line {line}: {column}: {show(value)} is not text")
                )
                continue
            clean[column] = str(value).strip()
        elif sort == "number":
            try:
                number = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
                if isinstance(value, bool) or number != number or number in (float("inf"), float("-inf")):
                    raise ValueError
            except (TypeError, ValueError):
                problems.append(
                    Problem(
                        "invalid_number", column, show(value), f"line {line}: {column}: {show(value)} is not a number"
                    )
                )
                continue
            highest = REFERENCE_MAXIMUM[column]
            if not 0 <= number <= highest:
                problems.append(
                    Problem(
                        "out_of_range",
                        column,
                        show(value),
                        f"line {line}: {column}: {show(value)} is outside 0 to {highest:,}",
                    )
                )
                continue
            clean[column] = number
        elif sort == "boolean":
            text = str(value).strip().lower()
            if isinstance(value, bool):
                clean[column] = value
            elif text in _TRUE or text in _FALSE:
                clean[column] = text in _TRUE
            else:
                problems.append(
                    Problem(
                        "invalid_boolean",
                        column,
                        show(value),
                        f"line {line}: {column}: {show(value)} is not true or false",
                    )
                )
        else:  # time
            try:
                stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
            except ValueError:
                problems.append(
                    Problem(
                        "invalid_timestamp",
                        column,
                        show(value),
                        f"line {line}: {column}: {show(value)} is not an ISO 8601 time",
                    )
                )
                continue
            stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
            if column == "as_of" and stamp > now + max_ahead:
                problems.append(
                    Problem(
                        "future_timestamp",
                        column,
                        show(value),
                        f"line {line}: {column}: {show(value)} is in the future",
                    )
                )
                continue
            clean[column] = stamp
    if problems:
        return None, problems
    if kind == "catalogue" and clean["available"] is None:
        clean["available"] = True
    if kind == "inventory" and clean["as_of"] is None:
        clean["as_of"] = now
    return clean, []


def read_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line, row, text) for every row of a CSV, JSON Lines or Parquet file; a JSON line that is not
    an object comes as (line, ``None``, its text)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                number += 1
                yield number, row, None
        return
    if suffix == ".csv":
        with open(path, "rb") as raw:
            # utf-8-sig: a spreadsheet's export often starts with a byte-order mark, which would rename the
            # first column
            handle = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            reader = csv.DictReader(handle)
            reader.fieldnames = [h.strip() for h in (reader.fieldnames or [])]
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None}, None
        return
    with open(path, "rb") as lines:
        for n, line in enumerate(lines, start=1):
            if line.strip():
                parsed = parse_line(line)
                yield n, parsed, None if parsed is not None else line.decode("utf-8", "replace").rstrip("\r\n")


def parse_line(line: bytes | str) -> dict | None:
    """One JSON Lines row as an object, or ``None`` if it is not a JSON object."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


def ensure_reference_tables(engine: Engine) -> None:
    for kind in KINDS:
        columns = ", ".join(f"{c} {_SQL_TYPES[t]}" for c, t in COLUMNS[kind].items())
        engine.execute(f"CREATE TABLE IF NOT EXISTS {kind} ({columns}, imported_at TIMESTAMPTZ)")


def _arrow(kind: str, rows: list[dict], now: datetime) -> pa.Table:
    types = {"text": pa.string(), "number": pa.float64(), "boolean": pa.bool_(), "time": pa.timestamp("us", "UTC")}
    columns = {c: pa.array([r[c] for r in rows], types[t]) for c, t in COLUMNS[kind].items()}
    columns["imported_at"] = pa.array([now] * len(rows), types["time"])
    return pa.table(columns)


def write_rows(engine: Engine, kind: str, rows: list[dict], now: datetime) -> tuple[int, int]:
    """Store ``rows`` (clean, in file order); returns (rows stored, rows that changed nothing: equal to
    the stored row, stale, or overtaken by a later row of the same key).

    Within the rows the last one of a key wins (for inventory, the latest ``as_of``, then the last);
    a stored inventory row newer than the incoming one is kept."""
    if not rows:
        return 0, 0
    ensure_reference_tables(engine)
    keys = KEYS[kind]
    latest: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        if kind == "inventory" and key in latest and latest[key]["as_of"] > row["as_of"]:
            continue
        latest[key] = row
    incoming = list(latest.values())
    engine.register("_reference_rows", _arrow(kind, incoming, now))
    on = " AND ".join(f"t.{k} = r.{k}" for k in keys)
    try:
        same = " AND ".join(f"t.{c} IS NOT DISTINCT FROM r.{c}" for c in COLUMNS[kind])
        # a row equal to the stored one changes nothing; a stored count newer than the incoming one stays
        newer = " OR t.as_of > r.as_of" if kind == "inventory" else ""
        engine.execute(f"""CREATE OR REPLACE TEMP TABLE _reference_new AS SELECT r.* FROM _reference_rows r
                           WHERE NOT EXISTS (SELECT 1 FROM {kind} t WHERE {on} AND ({same}{newer}))""")
        engine.execute(f"DELETE FROM {kind} t WHERE EXISTS (SELECT 1 FROM _reference_new r WHERE {on})")
        engine.execute(f"INSERT INTO {kind} SELECT * FROM _reference_new")
        stored = engine.scalar("SELECT count(*) FROM _reference_new")
        engine.execute("DROP TABLE _reference_new")
    finally:
        engine.unregister("_reference_rows")
    return stored, len(rows) - stored


def stock_levels(engine: Engine, location: str) -> dict[str, float] | None:
    """Units in stock per product at ``location`` (a store id, or ``online``); ``None`` when no
    inventory was ever imported for it (then stock is unknown, not zero)."""
    if not engine.has_table("inventory"):
        return None
    rows = engine.rows("SELECT product_id, quantity FROM inventory WHERE store_id = ?", [location])
    return {r["product_id"]: r["quantity"] for r in rows} if rows else None


def catalogue_facts(engine: Engine) -> dict:
    """From the catalogue: the products not on sale (``unavailable``), and each product's launch time
    (``launched``); empty when no catalogue was imported."""
    if not engine.has_table("catalogue"):
        return {"unavailable": set(), "launched": {}, "products": {}}
    rows = engine.rows("SELECT product_id, available, launched_at, category FROM catalogue")
    return {
        "unavailable": {r["product_id"] for r in rows if r["available"] is False},
        "launched": {r["product_id"]: r["launched_at"] for r in rows if r["launched_at"] is not None},
        "products": {r["product_id"]: r["category"] for r in rows},
    }


def reference_summary(engine: Engine) -> dict:
    """How much reference data there is: catalogue products (and how many are off sale) and inventory
    rows per location (and how many are out of stock)."""
    out: dict = {"catalogue": None, "inventory": None}
    if engine.has_table("catalogue"):
        out["catalogue"] = engine.rows(
            "SELECT count(*) AS products, count(*) FILTER (WHERE NOT available) AS off_sale FROM catalogue"
        )[0]
    if engine.has_table("inventory"):
        out["inventory"] = engine.rows("""SELECT store_id AS location, count(*) AS products,
                                          count(*) FILTER (WHERE quantity <= 0) AS out_of_stock, max(as_of) AS as_of
                                          FROM inventory GROUP BY 1 ORDER BY 1""")
    return out


def location_stock(engine: Engine, location: str, product: str | None = None, limit: int = 1000) -> list[dict]:
    """A location's stock as imported (a store id, or ``online``): each product's units, whether in stock, as
    of when, and whether the catalogue has it on sale; one product's with ``product``."""
    ensure_reference_tables(engine)
    return engine.rows(
        f"""
        SELECT i.product_id, i.quantity, i.quantity > 0 AS in_stock, i.as_of,
               c.available IS NOT false AS on_sale
        FROM inventory i LEFT JOIN catalogue c USING (product_id)
        WHERE i.store_id = ?{" AND i.product_id = ?" if product else ""}
        ORDER BY i.product_id LIMIT ?""",
        [location] + ([product] if product else []) + [limit],
    )
