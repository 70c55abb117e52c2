"""The log keeps each event's keyed hashes beside it; a log stored before that gets them when opened."""

from __future__ import annotations

from omnithread.privacy import IdentifierType
from omnithread.workspace import Workspace
from tests.conftest import write_lines


def _events():
    return [
        {"type": "identify", "messageId": "i1", "userId": "u1", "timestamp": "2026-10-01T10:00:00Z",
         "traits": {"email": " Ann@Example.com ", "phone": "+44 7700 900123"}},
        {"type": "track", "event": "Order Completed", "messageId": "o1", "anonymousId": "till:S01:T1",
         "timestamp": "2026-10-01T11:00:00Z", "context": {"channel": "store", "store_id": "S01"},
         "properties": {"order_id": "T1", "products": [{"product_id": "P1"}], "payment_token": "tok_123456",
                        "loyalty_card": "LC0012345678"}},
        {"type": "page", "messageId": "p1", "anonymousId": "a1", "timestamp": "2026-10-01T12:00:00Z", "name": "Home"},
    ]


def test_each_event_keeps_the_keyed_hashes_it_names_and_an_old_log_gets_them_on_opening(tmp_path, settings):
    source = write_lines(tmp_path / "events.jsonl", _events())
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths([source])
        stored = {r["message_id"]: r["identifiers"] for r in ws.engine.rows(
            "SELECT message_id, identifiers FROM events ORDER BY message_id")}
        email = ws.pseudonymiser.hash(IdentifierType.EMAIL, "ann@example.com")
        card = ws.pseudonymiser.hash(IdentifierType.PAYMENT_TOKEN, "tok_123456")
    assert stored["p1"] is None
    assert [node.split(":")[0] for node in stored["i1"]] == ["email", "phone"]
    assert stored["i1"][0] == f"email:{email}" and f"payment_token:{card}" in stored["o1"]
    assert [node.split(":")[0] for node in stored["o1"]] == ["loyalty_card", "payment_token"]
    assert "ann@example.com" not in str(stored).lower()
    # a log from before the column existed: drop it, reopen, and it is derived again, the same
    with Workspace(settings) as ws:
        ws.engine.execute("ALTER TABLE events DROP COLUMN identifiers")
    with Workspace(settings) as ws:
        again = {r["message_id"]: r["identifiers"] for r in ws.engine.rows(
            "SELECT message_id, identifiers FROM events ORDER BY message_id")}
    assert again == stored
