"""The tables every engine holds, in logical types each engine maps to its own."""

from __future__ import annotations

__all__ = ["TABLES", "EVENT_COLUMNS", "REJECTED_COLUMNS"]

# (column, logical type, nullable)
EVENT_COLUMNS = [
    ("message_id", "string", False),
    ("call", "string", False),
    ("event", "string", True),
    ("user_id", "string", True),
    ("anonymous_id", "string", True),
    ("previous_id", "string", True),
    ("group_id", "string", True),
    ("channel", "string", True),
    ("store_id", "string", True),
    ("event_at", "timestamp", False),
    ("original_at", "timestamp", True),
    ("sent_at", "timestamp", True),
    ("received_at", "timestamp", False),
    ("loaded_at", "timestamp", False),
    ("schema_version", "int", True),
    ("properties", "json", True),
    ("traits", "json", True),
    ("context", "json", True),
    ("consent", "json", True),
    ("extra", "json", True),
    ("source", "string", True),
]

REJECTED_COLUMNS = [
    ("rejected_id", "string", False),
    ("rejected_at", "timestamp", False),
    ("source", "string", True),
    ("format", "string", False),
    ("reason_codes", "string[]", False),
    ("reasons", "json", False),
    ("payload", "json", True),
    ("payload_encrypted", "bytes", True),
    ("status", "string", False),
    ("attempts", "int", False),
    ("replayed_at", "timestamp", True),
]

TABLES = {"events": EVENT_COLUMNS, "rejected_events": REJECTED_COLUMNS}
