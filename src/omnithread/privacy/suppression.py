"""The suppression list: identifiers whose events are refused at the door.

An erasure in ``suppress`` mode puts a person's identifiers (as stored: keyed hashes, account and device ids)
on the list; a palm token whose person's latest consent refuses biometric identification is refused the same
way. Every import path and the collector ask the list before they store an event (``EventLog`` is handed one
by the workspace: the event log, a lower layer, never imports this module). ``refused_by_suppression`` has a
set-based twin, ``omnithread.engine.base.names_any_sql``, which erasure uses to find the events to delete.
"""

from __future__ import annotations

from omnithread.engine.base import Engine

__all__ = ["SUPPRESSION_TABLE", "SuppressionList", "ensure_suppression_table", "refused_by_suppression"]

SUPPRESSION_TABLE = "suppressed_identifiers"


def ensure_suppression_table(engine: Engine) -> None:
    engine.execute(f"""CREATE TABLE IF NOT EXISTS {SUPPRESSION_TABLE} (
        value VARCHAR PRIMARY KEY, identifier_type VARCHAR, suppressed_at TIMESTAMPTZ DEFAULT now())""")


def refused_by_suppression(values: frozenset[str], user_id, anonymous_id, *texts) -> bool:
    """Whether an event names a suppressed identifier (its ids, or a hash inside its JSON)."""
    if not values:
        return False
    if user_id in values or anonymous_id in values:
        return True
    for text in texts:
        if text and any(v in text for v in values if len(v) >= 8):
            return True
    return False


class SuppressionList:
    """The identifiers refused at the door, read from the engine; :meth:`reload` after a change."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.values: frozenset[str] = frozenset()
        self.reload()

    def reload(self) -> None:
        """Read the list again: suppressed identifiers, and palm tokens refused by consent."""
        engine = self.engine
        values = (
            {r["value"] for r in engine.rows(f"SELECT value FROM {SUPPRESSION_TABLE}")}
            if engine.has_table(SUPPRESSION_TABLE)
            else set()
        )
        # palm tokens of people whose latest consent refuses biometric identification: refused like suppression
        if engine.has_table("profiles") and engine.has_table("identity_map"):
            values |= {
                r["v"]
                for r in engine.rows("""
                SELECT split_part(identifier, ':', 2) AS v FROM identity_map
                WHERE identifier LIKE 'palm_token:%' AND person_id IN (
                    SELECT person_id FROM profiles WHERE consent_biometric = false)""")
            }
        self.values = frozenset(values)

    def add(self, typed_values: dict[str, str]) -> int:
        """Put identifiers (value -> identifier type) on the list; returns how many were given."""
        ensure_suppression_table(self.engine)
        for value, kind in typed_values.items():
            self.engine.execute(
                f"INSERT INTO {SUPPRESSION_TABLE} (value, identifier_type) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [value, kind],
            )
        return len(typed_values)

    def refuses(self, user_id, anonymous_id, *texts) -> bool:
        """Whether an event with these ids and JSON texts names an identifier on the list."""
        return refused_by_suppression(self.values, user_id, anonymous_id, *texts)
