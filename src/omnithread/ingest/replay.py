"""Replay rejected events after a fix: each goes through import again.

A replayed event that now passes is stored (or recognised as a duplicate) and
its rejected row is marked ``replayed``; one that still fails keeps its row,
with the reasons of this attempt and one more attempt counted.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson

from omnithread.ingest.pipeline import Ingestor, IngestReport
from omnithread.ingest.reference import parse_line
from omnithread.privacy import reveal_encrypted_values

__all__ = ["replay_rejected"]


def _till_lines(ingestor: Ingestor, payload: dict) -> list[tuple[int, dict]]:
    rows = []
    for row in payload["rows"]:
        if "encrypted_row" in row:
            hexed: dict = ingestor.cipher.decrypt_value(row["encrypted_row"])  # type: ignore[assignment]
            row = {k: bytes.fromhex(v).decode("utf-8", "surrogateescape") for k, v in hexed.items()}
        rows.append(reveal_encrypted_values(row, ingestor.cipher))
    lines = payload.get("lines") or list(range(1, len(rows) + 1))
    return list(zip(lines, rows))


def _resubmit(ingestor: Ingestor, record: dict) -> bool:
    """Send one rejected record through import again; True if it is one unit."""
    fmt, source = record["format"], record["source"] or "replay"
    if fmt == "raw":
        ingestor.submit_line(ingestor.cipher.decrypt(record["payload_encrypted"]), source)
        return True
    payload = reveal_encrypted_values(orjson.loads(record["payload"]), ingestor.cipher)
    if fmt == "segment":
        ingestor.submit_payload(payload, source)
        return True
    if fmt == "till_csv":
        ingestor.submit_till_order(_till_lines(ingestor, payload), source.rsplit(":", 1)[0])
        return True
    if fmt.endswith("_row") and payload.get("kind"):  # a catalogue or inventory row
        kind, line, where = payload["kind"], payload["line"], source.rsplit(":", 1)[0]
        row = payload.get("row") if "row" in payload else parse_line(payload.get("text") or "")
        if row is None:
            ingestor.reject_reference_text(kind, line, payload.get("text"), where)
        else:
            ingestor.submit_reference_row(kind, line, row, where)
        return True
    if fmt == "file" or (fmt.endswith("_file") and payload.get("kind")):
        path = Path(payload["path"])
        if ingestor.refuse_unreadable(path, fmt, payload):
            return True  # still missing or empty: one unit, which keeps its record
        if fmt == "file":
            ingestor.ingest_file(path)
        else:
            ingestor.ingest_reference([path], payload["kind"])
        return False
    if fmt == "segment_batch":
        ingestor.submit_batch(payload, len(orjson.dumps(payload)), source)
    return False


def replay_rejected(
    ingestor: Ingestor, ids: list[str] | None = None, reason: str | None = None
) -> tuple[IngestReport, list[str], list[str]]:
    """Replay open rejected events (all, by id or by reason code).

    Returns the import report, the ids now replayed and the ids still failing.
    """
    log = ingestor.log
    records = log.rejected(status="open", reason=reason, ids=ids)
    ingestor.begin("replay")
    replayed, failing = [], []
    for record in records:
        before = ingestor.report.rejected
        single = _resubmit(ingestor, record)
        if single and ingestor.report.rejected > before:
            # Still failing: keep the original row, with this attempt's reasons.
            staged = ingestor.take_last_rejected()
            log.mark_still_failing(record["rejected_id"], staged[4], staged[5])
            failing.append(record["rejected_id"])
        else:
            replayed.append(record["rejected_id"])
    ingestor.flush()
    log.mark_replayed(replayed, datetime.now(timezone.utc))
    return ingestor.report, replayed, failing
