"""Store till exports: one CSV row per order line, assembled into Order Completed events.

Rows of one order need not be adjacent: an order stays open until no row of it
has been seen for ``window`` rows, so interleaved tills still group correctly
while memory stays flat however long the file is.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Iterator

import orjson

from omnithread.errors import Problem
from omnithread.events.schema import PRODUCT_FIELDS
from omnithread.events.validate import show

__all__ = ["TILL_COLUMNS", "TILL_OPTIONAL_COLUMNS", "TillOrders", "check_till_row", "order_event", "missing_columns"]

TILL_COLUMNS = ("store_id", "till_id", "timestamp", "order_id", "product_id", "quantity", "price")
TILL_OPTIONAL_COLUMNS = ("loyalty_card", "payment_token", "currency")


def missing_columns(header: list[str] | None) -> list[str]:
    present = set(header or [])
    return [c for c in TILL_COLUMNS if c not in present]


def check_till_row(row: dict, line: int) -> list[Problem]:
    """Every problem of one till row, each naming the line, the column and the value."""
    problems = []
    for column in TILL_COLUMNS:
        value = row.get(column)
        if value is None or str(value).strip() == "":
            problems.append(Problem("missing_field", column, "", f"line {line}: {column} is empty or missing"))
    for column, kind in (("quantity", int), ("price", float)):
        value = row.get(column)
        if value is None or str(value).strip() == "":
            continue
        try:
            number = kind(str(value).strip())
        except ValueError:
            word = "an integer" if kind is int else "a number"
            problems.append(
                Problem("invalid_number", column, show(value), f"line {line}: {column}: {show(value)} is not {word}")
            )
            continue
        spec = PRODUCT_FIELDS[column]  # the event's own ranges: one rule for a till line and an order line
        assert spec.minimum is not None and spec.maximum is not None
        if number != number or not spec.minimum <= number <= spec.maximum:
            problems.append(
                Problem(
                    "out_of_range",
                    column,
                    show(value),
                    f"line {line}: {column}: {show(value)} is outside {spec.minimum:,} to {spec.maximum:,}",
                )
            )
    stamp = row.get("timestamp")
    if stamp:
        try:
            datetime.fromisoformat(str(stamp).strip())
        except ValueError:
            problems.append(
                Problem(
                    "invalid_timestamp",
                    "timestamp",
                    show(stamp),
                    f"line {line}: timestamp: {show(stamp)} is not an ISO 8601 time",
                )
            )
    return problems


def _iso(stamp: str) -> str:
    parsed = datetime.fromisoformat(stamp.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.isoformat()


def order_event(rows: list[dict], default_currency: str = "GBP") -> dict:
    """The Order Completed call for one till order (rows already checked).

    Its ``messageId`` is derived from the order's content, so importing the same
    export twice stores the order once.
    """
    first = rows[0]
    products = [
        {"product_id": r["product_id"].strip(), "quantity": int(r["quantity"]), "price": float(r["price"])}
        for r in rows
    ]
    total = round(sum(p["quantity"] * p["price"] for p in products), 2)
    store_id, order_id = first["store_id"].strip(), first["order_id"].strip()
    properties = {
        "order_id": order_id,
        "till_id": first["till_id"].strip(),
        "total": total,
        "revenue": total,
        "currency": (first.get("currency") or default_currency).strip() or default_currency,
        "products": products,
    }
    for key in ("loyalty_card", "payment_token"):
        value = next((r[key].strip() for r in rows if r.get(key) and r[key].strip()), None)
        if value:
            properties[key] = value
    content = orjson.dumps([store_id, order_id, products], option=orjson.OPT_SORT_KEYS)
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": "till-" + hashlib.sha256(content).hexdigest()[:32],
        "anonymousId": f"till:{store_id}:{order_id}",
        "timestamp": _iso(min(r["timestamp"] for r in rows)),
        "context": {"channel": "store", "store_id": store_id, "source": "till_csv"},
        "properties": properties,
    }


class TillOrders:
    """Groups till rows into orders within a window of rows."""

    def __init__(self, window: int = 5_000):
        self.window = window
        self._open: OrderedDict[tuple[str, str], tuple[int, list]] = OrderedDict()
        self._seen = 0

    def add(self, row: dict, line: int) -> Iterator[list[tuple[int, dict]]]:
        """Add a row; yield the orders that closed because they fell out of the window."""
        self._seen += 1
        key = (str(row.get("store_id") or "").strip(), str(row.get("order_id") or "").strip())
        entry = self._open.pop(key, None)
        lines = entry[1] if entry else []
        lines.append((line, row))
        self._open[key] = (self._seen, lines)
        while self._open:
            oldest_key, (last_seen, oldest) = next(iter(self._open.items()))
            if self._seen - last_seen < self.window:
                break
            del self._open[oldest_key]
            yield oldest

    def close(self) -> Iterator[list[tuple[int, dict]]]:
        """Yield every order still open."""
        while self._open:
            yield self._open.popitem(last=False)[1][1]
