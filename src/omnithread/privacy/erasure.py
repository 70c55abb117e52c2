"""Erasure's primitives, in the manner of Segment's regulations: the modes, the report, the check of a
request, and the deletion of the events and rejected payloads that name a person's identifiers.

The erasure itself spans the stages (find the person, suppress, delete, rebuild the graph and the profiles,
retrain, rewrite the file) and lives above them, in :func:`omnithread.flows.erase`.

* ``suppress``: the person's identifiers (as stored: keyed hashes, account and device ids) go on the
  suppression list (:mod:`omnithread.privacy.suppression`); events naming any of them are refused at the door
  from then on (not stored, not kept as rejected), on every import path and the collector.
* ``delete``: the person's events are deleted (every event naming one of their identifiers), with the rejected
  payloads that carry their identifiers; the identity graph, the persons and the profiles are rebuilt from what
  is left; a trained recommendation model is retrained without them.
* ``suppress_and_delete``: both.

What is logged: the request's mode, when, by which key, and counts; never the person's identifiers
(the audit target is a keyed fingerprint of the request).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from omnithread.engine.base import Engine, names_any_sql
from omnithread.errors import InvalidRequestError
from omnithread.privacy.crypto import PayloadCipher

__all__ = ["MODES", "ErasureReport", "check_request", "delete_events_naming"]

MODES = ("suppress", "delete", "suppress_and_delete")


@dataclass
class ErasureReport:
    mode: str
    request_id: str
    identifiers: int = 0
    events_deleted: int = 0
    rejected_deleted: int = 0
    history_rows_deleted: int = 0
    suppressed: int = 0
    persons_after: int = 0
    model_retrained: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def check_request(key: object, mode: object, raw_values: object) -> tuple[str, str, tuple[str, ...]]:
    """An erasure request's parts, checked: every problem names the field and the value."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidRequestError("person", key, "the person id or one of their identifiers, as a non-empty string")
    if mode not in MODES:
        raise InvalidRequestError("mode", mode, f"one of {', '.join(MODES)}")
    if raw_values is None:
        raw_values = ()
    if not isinstance(raw_values, (list, tuple)) or not all(isinstance(v, str) for v in raw_values):
        raise InvalidRequestError("raw_values", raw_values, "a list of strings (raw emails, phones)")
    return key.strip(), mode, tuple(v for v in raw_values if v)


def delete_events_naming(
    engine: Engine, cipher: PayloadCipher, values: list[str], raw_values: tuple[str, ...] = ()
) -> tuple[int, int]:
    """Delete every event naming one of ``values`` (as an id, a previous id, or inside its JSON) and every
    rejected payload carrying one (encrypted ones are opened and searched, for ``raw_values`` too, the raw
    forms a requester gave). Returns (events deleted, rejected payloads deleted)."""
    engine.execute("CREATE OR REPLACE TEMP TABLE _erase_ids (message_id VARCHAR)")
    rejected = 0
    if values:
        engine.register("_erase_values", pa.table({"v": pa.array(values, pa.string())}))
        try:
            engine.execute(f"""INSERT INTO _erase_ids
                SELECT e.message_id FROM events e
                WHERE {names_any_sql("e", "_erase_values")} OR e.previous_id IN (SELECT v FROM _erase_values)""")
            rejected = engine.delete_where(
                "rejected_events",
                "EXISTS (SELECT 1 FROM _erase_values x WHERE length(x.v) >= 8 AND "
                "contains(coalesce(CAST(payload AS VARCHAR), ''), x.v))",
                [],
            )
        finally:
            engine.unregister("_erase_values")
    events = engine.delete_where("events", "message_id IN (SELECT message_id FROM _erase_ids)", [])
    engine.execute("DROP TABLE IF EXISTS _erase_ids")
    # unparseable input is kept encrypted: open each and look for the person's values
    needles = [v.encode() for v in values if len(v) >= 8] + [r.encode() for r in raw_values if r]
    if needles:
        doomed = []
        for row in engine.rows(
            "SELECT rejected_id, payload_encrypted FROM rejected_events WHERE payload_encrypted IS NOT NULL"
        ):
            try:
                plain = cipher.decrypt(bytes(row["payload_encrypted"]))
            except Exception:  # noqa: BLE001 - unreadable under this key: cannot be theirs to judge; keep
                continue
            if any(n in plain for n in needles):
                doomed.append(row["rejected_id"])
        for rid in doomed:
            engine.execute("DELETE FROM rejected_events WHERE rejected_id = ?", [rid])
        rejected += len(doomed)
    return events, rejected
