"""The log keeps each event's keyed hashes beside it; a log stored before that gets them when opened."""

from __future__ import annotations

from dataclasses import replace

from omnithread.privacy import IdentifierType
from omnithread.workspace import Workspace
from tests.conftest import write_lines


def _events():
    return [
        {
            "type": "identify",
            "messageId": "i1",
            "userId": "u1",
            "timestamp": "2026-10-01T10:00:00Z",
            "traits": {"email": " Ann@Example.com ", "phone": "+44 7700 900123"},
        },
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": "o1",
            "anonymousId": "till:S01:T1",
            "timestamp": "2026-10-01T11:00:00Z",
            "context": {"channel": "store", "store_id": "S01"},
            "properties": {
                "order_id": "T1",
                "products": [{"product_id": "P1"}],
                "payment_token": "tok_123456",
                "loyalty_card": "LC0012345678",
            },
        },
        {"type": "page", "messageId": "p1", "anonymousId": "a1", "timestamp": "2026-10-01T12:00:00Z", "name": "Home"},
    ]


def test_each_event_keeps_the_keyed_hashes_it_names_and_an_old_log_gets_them_on_opening(tmp_path, settings):
    source = write_lines(tmp_path / "events.jsonl", _events())
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths([source])
        stored = {
            r["message_id"]: r["identifiers"]
            for r in ws.engine.rows("SELECT message_id, identifiers FROM events ORDER BY message_id")
        }
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
        again = {
            r["message_id"]: r["identifiers"]
            for r in ws.engine.rows("SELECT message_id, identifiers FROM events ORDER BY message_id")
        }
    assert again == stored


def _sql_and_python(engine):
    from omnithread.engine.tables import identifiers_of, identifiers_sql

    rows = engine.rows(
        f"SELECT message_id, event, traits::VARCHAR AS traits, properties::VARCHAR AS properties, "
        f"context::VARCHAR AS context, identifiers, {identifiers_sql()} AS by_sql FROM events"
    )
    return rows, [identifiers_of(r["event"], r["traits"], r["properties"], r["context"]) for r in rows]


def test_the_identifiers_derived_in_python_equal_the_engines_on_the_simulated_retailer(small_world, workspace):
    manifest = small_world[1]
    workspace.ingestor().ingest_paths(manifest["sources"])
    rows, by_python = _sql_and_python(workspace.engine)
    assert sum(r["by_sql"] is not None for r in rows) > 1_000
    assert [r["by_sql"] for r in rows] == by_python == [r["identifiers"] for r in rows]


def test_the_identifiers_derived_in_python_equal_the_engines_on_odd_shapes(tmp_path, settings, monkeypatch):
    monkeypatch.setenv("OMNITHREAD_SECRET", "a secret both data directories share, long enough")
    h = "0123456789abcdef" * 2
    events = [
        {
            "type": "identify",
            "messageId": "a",
            "userId": "u",
            "traits": {"email": f"em_{h}", "mobile": f"ph_{h}", "nested": {"phone": f"ph_{'1' * 32}"}},
        },
        {
            "type": "track",
            "event": "Store Entered",
            "messageId": "b",
            "anonymousId": "s",
            "properties": {"store_id": "S1", "entry_method": "app_code", "entry_token": f"ac_{h}"},
            "context": {"channel": "store", "store_id": "S1", "traits": {"email": f"em_{'2' * 32}"}},
        },
        {
            "type": "track",
            "event": "Coupon Shown",
            "messageId": "c",
            "anonymousId": "d",
            "properties": {"entry_token": f"ac_{h}", "note": f"em_{h}", "payment_token": f"pt_{h.upper()}"},
        },
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": "d",
            "anonymousId": "d",
            "properties": {
                "order_id": "1",
                "products": [],
                "payment_token": f"pt_{h}",
                "loyalty_card": f"lc_{h}",
                "app_code": 12345,
            },
            "context": {"traits": {"phone": f"ph_{h}"}, "email": f"em_{h}"},
        },
    ]
    source = write_lines(tmp_path / "odd.jsonl", events)
    stored = []
    # the file import's set-based path derives them in the engine; the row by row path (the collector's) in Python
    for fast in (True, False):
        with Workspace(replace(settings, data_dir=tmp_path / f"data-{fast}", fast_path=fast)) as ws:
            ws.ingestor().ingest_paths([source])
            rows, by_python = _sql_and_python(ws.engine)
        assert len(rows) == 4
        assert [r["by_sql"] for r in rows] == by_python == [r["identifiers"] for r in rows]
        stored.append({r["message_id"]: r["identifiers"] for r in rows})
    assert stored[0] == stored[1]
    assert stored[0]["b"] == [f"app_code:ac_{h}", f"email:em_{'2' * 32}"] and stored[0]["c"] == [stored[0]["c"][0]]


def test_every_event_gets_its_message_key_and_a_key_shared_by_two_ids_stores_both(tmp_path, settings):
    first = write_lines(tmp_path / "first.jsonl", _events())
    for fast in (True, False):
        with Workspace(replace(settings, data_dir=tmp_path / f"data-{fast}", fast_path=fast)) as ws:
            ws.ingestor().ingest_paths([first])
            assert (
                ws.engine.scalar(
                    "SELECT count(*) FROM events WHERE message_key IS NULL "
                    "OR message_key <> md5_number_lower(message_id)"
                )
                == 0
            )
            # make a stored event's key collide with the key of an id not stored yet: the import
            # compares ids where keys meet, so the new event is stored and the old one not again
            ws.engine.execute("UPDATE events SET message_key = md5_number_lower('n1') WHERE message_id = 'p1'")
            extra = {
                "type": "page",
                "messageId": "n1",
                "anonymousId": "a2",
                "timestamp": "2026-10-02T12:00:00Z",
                "name": "Home",
            }
            ws.ingestor().ingest_paths([write_lines(tmp_path / "second.jsonl", [*_events(), extra])])
            assert ws.engine.scalar("SELECT count(*) FROM events") == 4, fast
            assert ws.engine.scalar("SELECT count(*) FROM events WHERE message_id = 'n1'") == 1
    # a log from before the column existed gets it when opened
    with Workspace(replace(settings, data_dir=tmp_path / "data-True")) as ws:
        ws.engine.execute("ALTER TABLE events DROP COLUMN message_key")
    with Workspace(replace(settings, data_dir=tmp_path / "data-True")) as ws:
        assert ws.engine.scalar("SELECT count(*) FROM events WHERE message_key = md5_number_lower(message_id)") == 4


def test_the_message_key_in_python_equals_the_engines(workspace):
    from omnithread.engine.tables import MESSAGE_KEY_SQL, message_key

    ids = ["abc", "", "load-0-1-2", "é–😀", "x" * 300, "0123456789abcdef0123456789abcdef"]
    rows = workspace.engine.rows(
        f"SELECT message_id, {MESSAGE_KEY_SQL} AS k FROM (SELECT unnest(?::VARCHAR[]) AS message_id)", [ids]
    )
    assert {r["message_id"]: r["k"] for r in rows} == {m: message_key(m) for m in ids}
