"""The append-only event log and the rejected-events table, over any engine."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
import pyarrow as pa

from omnithread.engine.base import Engine
from omnithread.engine.tables import EVENT_COLUMNS, REJECTED_COLUMNS, EventRow, RejectedRow, identifiers_of

__all__ = ["EventLog", "Suppression", "EVENT_ARROW_SCHEMA", "REJECTED_ARROW_SCHEMA"]

_ARROW = {
    "string": pa.string(),
    "string[]": pa.list_(pa.string()),
    "uint64": pa.uint64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "int": pa.int32(),
    "json": pa.string(),
    "bytes": pa.binary(),
}


def _schema(columns) -> pa.Schema:
    return pa.schema([pa.field(name, _ARROW[kind], nullable) for name, kind, nullable in columns])


EVENT_ARROW_SCHEMA = _schema(EVENT_COLUMNS)
REJECTED_ARROW_SCHEMA = _schema(REJECTED_COLUMNS)


def _table_from_rows(rows: Sequence[tuple], schema: pa.Schema) -> pa.Table:
    columns: list = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays([pa.array(column, type=f.type) for column, f in zip(columns, schema)], schema=schema)


def _events_table(rows: Sequence[EventRow]) -> pa.Table:
    """Rows as an Arrow table with the keyed hashes each names (``identifiers``) already derived, so a
    small write does not prepare the engine's expression for them (see ``identifiers_of``)."""
    table = _table_from_rows(rows, EVENT_ARROW_SCHEMA)
    found = [identifiers_of(r.event, r.traits, r.properties, r.context) for r in rows]
    return table.append_column("identifiers", pa.array(found, pa.list_(pa.string())))


class Suppression(Protocol):
    """What the log asks before it stores an event: is any identifier it names refused at the door?
    (``omnithread.privacy.suppression.SuppressionList``, handed over by the workspace.)"""

    values: frozenset[str]

    def reload(self) -> None: ...

    def refuses(self, user_id, anonymous_id, *texts) -> bool: ...


class _NoSuppression:
    values: frozenset[str] = frozenset()

    def reload(self) -> None:
        pass

    def refuses(self, user_id, anonymous_id, *texts) -> bool:
        return False


class EventLog:
    """Events in, deduplicated on ``message_id``; rejected events kept with their reasons.

    Rows are named records (:class:`~omnithread.engine.tables.EventRow`, :class:`~omnithread.engine.tables.RejectedRow`)
    whose fields are the columns of :data:`EVENT_COLUMNS` and :data:`REJECTED_COLUMNS`. Nothing here updates or
    deletes an event.
    """

    def __init__(self, engine: Engine, suppression: Suppression | None = None):
        self.engine = engine
        self.suppression: Suppression = suppression or _NoSuppression()
        self.refused_suppressed = 0  # events refused at the door because they name a suppressed identifier
        self.last_suppressed_ids: set[str] = set()  # the message ids the last write refused so

    @property
    def suppressed(self) -> frozenset[str]:
        """The identifiers whose events are refused at the door."""
        return self.suppression.values

    def reload_suppression(self) -> None:
        """Read the suppression list again (after an erasure or a consent change wrote to it)."""
        self.suppression.reload()

    def _kept(self, rows: Sequence[EventRow]) -> list[bool]:
        """Which rows name no suppressed identifier (the others are counted as refused)."""
        self.last_suppressed_ids = set()
        if not self.suppression.values:
            return [True] * len(rows)
        keep = [
            not self.suppression.refuses(r.user_id, r.anonymous_id, r.properties, r.traits, r.context) for r in rows
        ]
        self.refused_suppressed += keep.count(False)
        self.last_suppressed_ids = {r.message_id for r, k in zip(rows, keep) if not k}
        return keep

    def _refuse_suppressed(self, rows: Sequence[EventRow]) -> list[EventRow]:
        return [r for r, k in zip(rows, self._kept(rows)) if k]

    def append(self, rows: Sequence[EventRow]) -> int:
        """Append events whose message id is new; return how many were stored. Events naming a
        suppressed identifier are refused here, before anything is written."""
        rows = self._refuse_suppressed(rows)
        return self.engine.append_new("events", _events_table(rows), "message_id")

    def append_known_new(self, rows: Sequence[EventRow]) -> list[str]:
        """Append rows the caller knows are new (a process that alone writes the log and remembers
        every message id); returns the message ids stored (suppression applies)."""
        rows = self._refuse_suppressed(rows)
        self.engine.insert_rows("events", _events_table(rows))
        return [r.message_id for r in rows]

    def message_keys(self) -> np.ndarray:
        """Every stored event's message key (see ``MESSAGE_KEY_SQL``), sorted: 8 bytes an event."""
        return np.sort(
            np.asarray(self.engine.query("SELECT message_key FROM events").column(0).to_numpy(), dtype=np.uint64)
        )

    def stored_ids(self, keys: Iterable[int]) -> set[str]:
        """The message ids stored under any of ``keys``."""
        keys = sorted(set(keys))
        if not keys:
            return set()
        self.engine.register("_keys", pa.table({"k": pa.array(keys, pa.uint64())}))
        try:
            return set(
                self.engine.query("SELECT message_id FROM events WHERE message_key IN (SELECT k FROM _keys)")
                .column(0)
                .to_pylist()
            )
        finally:
            self.engine.unregister("_keys")

    def append_with_staged(self, rows: Sequence[EventRow], line_numbers: Sequence[int]) -> tuple[int, int]:
        """Store these rows together with the rows the engine's fast path holds, earliest line first.

        Returns (stored, offered)."""
        if self.suppressed:
            keep = self._kept(rows)
            rows = [r for r, k in zip(rows, keep) if k]
            line_numbers = [n for n, k in zip(line_numbers, keep) if k]
            self.refused_suppressed += self.engine.refuse_staged(self.suppressed)
        table = _table_from_rows(rows, EVENT_ARROW_SCHEMA)
        table = table.add_column(0, "line_no", pa.array(list(line_numbers), pa.int64()))
        return self.engine.commit_staged_events(table)

    def add_rejected(self, rows: Sequence[RejectedRow]) -> int:
        """Keep rejected payloads; one already kept (same id) is not stored twice."""
        return self.engine.append_new("rejected_events", _table_from_rows(rows, REJECTED_ARROW_SCHEMA), "rejected_id")

    def count(self) -> int:
        return self.engine.scalar("SELECT count(*) FROM events")

    def broker_position(self, stream: str) -> str | None:
        """The position of the last broker entry of ``stream`` stored in the log (None: none yet)."""
        return self.engine.scalar(
            "SELECT position FROM broker_positions WHERE stream = ? ORDER BY loaded_at DESC LIMIT 1", [stream]
        )

    def record_broker_position(self, stream: str, position: str, at: datetime) -> None:
        """Record that ``stream`` is stored up to ``position`` (call in the transaction that stored it)."""
        self.engine.execute("DELETE FROM broker_positions WHERE stream = ?", [stream])
        self.engine.execute("INSERT INTO broker_positions VALUES (?, ?, ?)", [stream, position, at])

    def rejected(
        self,
        status: str | None = "open",
        reason: str | None = None,
        limit: int | None = None,
        ids: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rejected events, newest first, filtered by status, reason code or ids."""
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if reason:
            where.append("list_contains(reason_codes, ?)")
            params.append(reason)
        if ids is not None:
            ids = list(ids)
            where.append(f"rejected_id IN ({', '.join('?' for _ in ids) or 'NULL'})")
            params.extend(ids)
        sql = "SELECT * FROM rejected_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY rejected_at DESC, source"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.engine.rows(sql, params)

    def mark_replayed(self, rejected_ids: Sequence[str], at: datetime) -> None:
        if rejected_ids:
            marks = ", ".join("?" for _ in rejected_ids)
            self.engine.execute(
                f"UPDATE rejected_events SET status = 'replayed', replayed_at = ?, attempts = attempts + 1 "
                f"WHERE rejected_id IN ({marks})",
                [at, *rejected_ids],
            )

    def mark_still_failing(self, rejected_id: str, reason_codes: list[str], reasons_json: str) -> None:
        self.engine.execute(
            "UPDATE rejected_events SET attempts = attempts + 1, reason_codes = ?, reasons = ? WHERE rejected_id = ?",
            [reason_codes, reasons_json, rejected_id],
        )

    def rejected_summary(self) -> list[dict[str, Any]]:
        """Open rejected events counted by reason code."""
        return self.engine.rows(
            "SELECT code AS reason, count(*) AS events FROM "
            "(SELECT unnest(reason_codes) AS code FROM rejected_events WHERE status = 'open') "
            "GROUP BY code ORDER BY events DESC, reason"
        )

    def store_receipts(self, store_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """A store's receipts and visits (entries, exits, orders, with review flags), newest first."""
        return self.engine.rows(
            """
            SELECT message_id, event, event_at, anonymous_id,
                   properties->>'order_id' AS order_id, properties->>'visit_id' AS visit_id,
                   TRY_CAST(properties->>'total' AS DOUBLE) AS total,
                   properties->>'review_required' AS review_required
            FROM events WHERE store_id = ? AND event IN ('Order Completed', 'Store Entered', 'Store Exited')
            ORDER BY event_at DESC, message_id LIMIT ?""",
            [store_id, limit],
        )

    def stats(self) -> dict[str, list[dict[str, Any]]]:
        """The log by channel, by event and by day."""
        label = "coalesce(event, call)"
        return {
            "by_channel": self.engine.rows(
                "SELECT coalesce(channel, 'unspecified') AS channel, count(*) AS events, "
                "count(DISTINCT coalesce(user_id, anonymous_id)) AS senders "
                "FROM events GROUP BY 1 ORDER BY events DESC"
            ),
            "by_event": self.engine.rows(
                f"SELECT {label} AS event, call, count(*) AS events FROM events GROUP BY 1, 2 "
                "ORDER BY events DESC, event"
            ),
            "by_day": self.engine.rows(
                "SELECT CAST(date_trunc('day', event_at) AS DATE) AS day, count(*) AS events, "
                "count(*) FILTER (WHERE channel IN ('web', 'app')) AS online, "
                "count(*) FILTER (WHERE channel = 'store') AS store, "
                "count(*) FILTER (WHERE channel = 'voice') AS voice "
                "FROM events GROUP BY 1 ORDER BY 1"
            ),
        }
