"""The service, tested as a real server process on loopback, with Segment's own Python client."""

from __future__ import annotations

import gzip
import json
import socket
import time

import httpx
import pytest

from omnithread.api.keys import KeyStore
from omnithread.privacy.secret import load_secret
from tests.conftest import Server, basic, track


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    data = tmp_path_factory.mktemp("served")
    store = KeyStore(data, load_secret(data))
    made = {role: store.create(role, f"test {role}")[0] for role in ("write", "read", "admin")}
    store.close()
    return data, made


@pytest.fixture(scope="module")
def server(keys):
    data, _ = keys
    s = Server(data).start()
    yield s
    s.stop()


def test_segments_own_python_client_sends_events_that_arrive(server, keys):
    from segment.analytics import Client

    _, made = keys
    client = Client(made["write"], host=server.url, sync_mode=True, gzip=True, max_retries=1)
    for n in range(25):
        client.track(
            user_id=f"user-{n % 5}",
            event="Product Viewed",
            properties={"product_id": f"P{n}"},
            context={"channel": "web"},
            message_id=f"seg-{n}",
        )
    client.identify(
        user_id="user-1", traits={"email": "Someone@Example.com"}, context={"channel": "web"}, message_id="seg-identify"
    )
    client.flush()
    before = httpx.get(f"{server.url}/health").json()["events"]
    assert before >= 26
    # a retry of everything stores nothing twice
    for n in range(25):
        client.track(
            user_id=f"user-{n % 5}",
            event="Product Viewed",
            properties={"product_id": f"P{n}"},
            context={"channel": "web"},
            message_id=f"seg-{n}",
        )
    client.flush()
    assert httpx.get(f"{server.url}/health").json()["events"] == before


def test_collector_answers_like_segment_and_keeps_what_it_refuses(server, keys):
    _, made = keys
    ok = httpx.post(f"{server.url}/v1/track", json=track(1), headers=basic(made["write"]))
    assert ok.status_code == 200 and ok.json()["success"] is True and ok.json()["accepted"] == 1
    again = httpx.post(f"{server.url}/v1/track", json=track(1), headers=basic(made["write"]))
    assert again.status_code == 200 and again.json()["duplicates"] == 1 and again.json()["accepted"] == 0
    bad = httpx.post(
        f"{server.url}/v1/track", json={"type": "track", "messageId": "no-event"}, headers=basic(made["write"])
    )
    assert bad.status_code == 400 and bad.json()["success"] is False and bad.json()["rejected"][0]["reasons"]
    big = track(2, properties={"product_id": "P", "blob": "x" * 40_000})
    too_big = httpx.post(f"{server.url}/v1/track", json=big, headers=basic(made["write"]))
    assert too_big.status_code == 400 and any(
        "32768" in r or "more than the limit" in r for r in too_big.json()["rejected"][0]["reasons"]
    )
    batch = {"batch": [track(10 + i) for i in range(3)] + [{"type": "trak", "anonymousId": "a"}]}
    mixed = httpx.post(f"{server.url}/v1/batch", json=batch, headers=basic(made["write"]))
    assert mixed.status_code == 200 and mixed.json()["accepted"] == 3 and mixed.json()["rejected"][0]["index"] == 3
    zipped = httpx.post(
        f"{server.url}/v1/batch",
        content=gzip.compress(json.dumps({"batch": [track(20)]}).encode()),
        headers={**basic(made["write"]), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert zipped.status_code == 200 and zipped.json()["accepted"] == 1
    body_key = httpx.post(f"{server.url}/v1/batch", json={"batch": [track(21)], "writeKey": made["write"]})
    assert body_key.status_code == 200 and body_key.json()["accepted"] == 1


def test_bad_requests_get_clear_errors(server, keys):
    _, made = keys
    w = basic(made["write"])
    assert httpx.post(f"{server.url}/v1/track", content=b"{not json", headers=w).json()["code"] == "invalid_json"
    assert httpx.post(f"{server.url}/v1/track", json=[1, 2], headers=w).json()["code"] == "not_an_object"
    assert (
        httpx.post(f"{server.url}/v1/batch", content=b"garbage", headers={**w, "Content-Encoding": "gzip"}).json()[
            "code"
        ]
        == "invalid_gzip"
    )
    assert (
        httpx.post(f"{server.url}/v1/batch", content=b"{}", headers={**w, "Content-Encoding": "br"}).status_code == 415
    )
    huge = httpx.post(f"{server.url}/v1/batch", content=b"x" * 700_000, headers=w)
    assert huge.status_code == 413 and huge.json()["code"] == "body_too_large"
    wrong_call = httpx.post(f"{server.url}/v1/identify", json=track(3), headers=w)
    assert wrong_call.status_code == 400 and wrong_call.json()["code"] == "invalid_call"
    injection = track(4, anonymousId="x'; DROP TABLE events; --", messageId="m-inj")
    assert httpx.post(f"{server.url}/v1/track", json=injection, headers=w).status_code == 200
    assert httpx.get(f"{server.url}/health").json()["events"] > 0


def test_keys_and_roles(server, keys):
    data, made = keys
    assert httpx.post(f"{server.url}/v1/track", json=track(30)).status_code == 401
    assert httpx.post(f"{server.url}/v1/track", json=track(30), headers=basic("otk_write_forged")).status_code == 401
    assert httpx.post(f"{server.url}/v1/track", json=track(30), headers=basic(made["read"])).status_code == 403
    assert (
        httpx.get(f"{server.url}/v1/recommendations?surface=trending", headers=basic(made["write"])).status_code == 403
    )
    assert httpx.get(f"{server.url}/v1/persons/anon-1").status_code == 401
    store = KeyStore(data, load_secret(data))
    temporary, record = store.create("write", "short-lived")
    time.sleep(0.3)
    assert httpx.post(f"{server.url}/v1/track", json=track(31), headers=basic(temporary)).status_code == 200
    store.revoke(record.key_id)
    time.sleep(1.2)  # a running server re-reads keys within a second
    assert httpx.post(f"{server.url}/v1/track", json=track(32), headers=basic(temporary)).status_code == 401
    assert "key_hash" not in json.dumps([k.as_dict() for k in store.list()])
    store.close()


def test_reads_of_personal_data_are_audited(server, keys):
    data, made = keys
    httpx.post(
        f"{server.url}/v1/identify",
        headers=basic(made["write"]),
        json={
            "type": "identify",
            "userId": "acct-9",
            "anonymousId": "dev-9",
            "messageId": "id-9",
            "traits": {"email": "nine@example.com"},
            "context": {"channel": "web"},
        },
    )
    r = httpx.get(f"{server.url}/v1/persons/acct-9", headers=basic(made["read"]))
    assert r.status_code == 200, r.text  # the service folds new events into persons before reading
    found = r.json()
    by_email = httpx.get(f"{server.url}/v1/persons/nine@example.com", headers=basic(made["read"])).json()
    assert by_email["person_id"] == found["person_id"]
    assert "nine@example.com" not in r.text  # identifiers come back as keyed hashes, never raw
    missing = httpx.get(f"{server.url}/v1/persons/..%2F..%2Fetc%2Fpasswd", headers=basic(made["read"]))
    assert missing.status_code == 404 and missing.json()["success"] is False
    store = KeyStore(data, load_secret(data))
    entries = store.audit_entries(50)
    assert any(e["action"] == "read person" for e in entries)
    assert any(e["outcome"].startswith("refused") for e in entries)
    with pytest.raises(Exception, match="append-only"):
        store._con.execute("DELETE FROM audit_log")
    store.close()


def test_openapi_document_describes_every_endpoint(server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/track", "/v1/batch", "/v1/persons/{key}", "/v1/recommendations"} <= set(doc["paths"])


def test_nothing_acknowledged_is_lost_when_the_process_is_killed(tmp_path):
    store = KeyStore(tmp_path, load_secret(tmp_path))
    key = store.create("write")[0]
    store.close()
    first = Server(tmp_path).start()
    acked = 0
    for b in range(5):
        r = httpx.post(
            f"{first.url}/v1/batch", json={"batch": [track(1000 + b * 10 + i) for i in range(10)]}, headers=basic(key)
        )
        assert r.status_code == 200
        acked += r.json()["accepted"]
    first.kill()  # no shutdown, no flush: the answer came after the commit
    second = Server(tmp_path).start()
    try:
        assert httpx.get(f"{second.url}/health").json()["events"] == acked == 50
        retry = httpx.post(
            f"{second.url}/v1/batch", json={"batch": [track(1000 + i) for i in range(10)]}, headers=basic(key)
        )
        assert retry.json()["accepted"] == 0 and retry.json()["duplicates"] == 10
    finally:
        second.stop()


def test_consent_and_erasure_through_the_admin_api(tmp_path):
    store = KeyStore(tmp_path, load_secret(tmp_path))
    write, read, admin = (store.create(r)[0] for r in ("write", "read", "admin"))
    store.close()
    s = Server(tmp_path).start()
    try:
        events = [
            {
                "type": "identify",
                "userId": "acct-zoe",
                "anonymousId": "dev-zoe",
                "messageId": "z1",
                "traits": {"email": "zoe@example.com", "palm_token": "palm-zoe-1"},
                "context": {"channel": "web"},
            },
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "acct-zoe",
                "anonymousId": "dev-zoe",
                "messageId": "z2",
                "context": {"channel": "web"},
                "properties": {"order_id": "Z1", "products": [{"product_id": "P1"}, {"product_id": "P2"}]},
            },
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "acct-yan",
                "anonymousId": "dev-yan",
                "messageId": "y1",
                "context": {"channel": "web"},
                "properties": {"order_id": "Y1", "products": [{"product_id": "P2"}, {"product_id": "P3"}]},
            },
        ]
        assert httpx.post(f"{s.url}/v1/batch", json={"batch": events}, headers=basic(write)).json()["accepted"] == 3
        consent = {
            "person": "zoe@example.com",
            "purposes": {"personalisation": False, "biometric": False},
            "source": "app settings",
        }
        assert httpx.post(f"{s.url}/v1/admin/consent", json=consent, headers=basic(read)).status_code == 403
        recorded = httpx.post(f"{s.url}/v1/admin/consent", json=consent, headers=basic(admin))
        assert recorded.status_code == 200, recorded.text
        recs = httpx.get(f"{s.url}/v1/recommendations", params={"person": "acct-zoe"}, headers=basic(read)).json()
        assert recs["surface"] == "trending" and "consent" in recs["fallback_reason"]
        # her palm, without biometric consent, is refused at the door
        palm = {
            "type": "track",
            "event": "Store Entered",
            "anonymousId": "visit-zoe",
            "messageId": "z3",
            "context": {"channel": "store", "store_id": "S1"},
            "properties": {"store_id": "S1", "entry_method": "palm", "entry_token": "palm-zoe-1"},
        }
        refused = httpx.post(f"{s.url}/v1/track", json=palm, headers=basic(write)).json()
        assert refused["accepted"] == 0
        bad = httpx.post(
            f"{s.url}/v1/admin/consent", json={"person": "acct-zoe", "purposes": {"mood": True}}, headers=basic(admin)
        )
        assert bad.status_code == 400 and "purposes" in bad.json()["message"]
        erased = httpx.post(
            f"{s.url}/v1/admin/erasure", json={"person": "zoe@example.com", "mode": "delete"}, headers=basic(admin)
        )
        assert erased.status_code == 200 and erased.json()["events_deleted"] >= 3
        assert httpx.get(f"{s.url}/v1/persons/acct-zoe", headers=basic(read)).status_code == 404
        assert httpx.get(f"{s.url}/v1/persons/acct-yan", headers=basic(read)).status_code == 200
        audit = httpx.get(f"{s.url}/v1/admin/audit", headers=basic(admin)).json()["entries"]
        assert any(e["action"] == "erasure delete" for e in audit)
        assert not any("acct-zoe" in str(e) or "zoe@example.com" in str(e) for e in audit)
    finally:
        s.stop()


def test_a_slow_client_does_not_hold_up_the_others(server, keys):
    _, made = keys
    slow = socket.create_connection(("127.0.0.1", server.port))
    try:
        slow.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n")  # and then nothing
        started = time.monotonic()
        ok = httpx.post(f"{server.url}/v1/track", json=track(700), headers=basic(made["write"]), timeout=5)
        assert ok.status_code == 200 and time.monotonic() - started < 2
    finally:
        slow.close()


def test_sql_meta_characters_in_every_field_are_just_text(server, keys):
    _, made = keys
    evil = "x'); DROP TABLE events; --\"\\%_*"
    event = {
        "type": "identify",
        "userId": evil,
        "anonymousId": evil + "a",
        "messageId": evil + "m",
        "traits": {"email": "evil@example.com", "firstName": evil, "address": {"street": evil}},
        "context": {"channel": "web", "page": {"url": evil}},
    }
    r = httpx.post(f"{server.url}/v1/identify", json=event, headers=basic(made["write"]))
    assert r.status_code == 200 and r.json()["accepted"] == 1
    again = httpx.get(f"{server.url}/v1/persons/{evil}", headers=basic(made["read"]))
    assert again.status_code in (200, 404)
    assert httpx.get(f"{server.url}/health").json()["events"] > 0  # the log is still there
    store = httpx.get(f"{server.url}/v1/stores/{evil}/receipts", headers=basic(made["read"]))
    assert store.status_code == 200 and store.json()["events"] == []


def test_the_collector_compares_message_ids_only_where_their_keys_meet(settings):
    from fastapi.testclient import TestClient

    from omnithread.api.app import create_app
    from omnithread.engine.tables import message_key

    app = create_app(settings)
    service = app.state.service
    headers = basic(service.keys.create("write", "test")[0])
    with TestClient(app) as client:
        assert client.post("/v1/batch", json={"batch": [track(1), track(2)]}, headers=headers).json()["accepted"] == 2
        # a stored event's key made equal to the key of an id not stored yet (as a collision would), read again
        with service.lock:
            service.ws.engine.execute(f"UPDATE events SET message_key = {message_key('m-3')} WHERE message_id = 'm-2'")
            service.forget_keys()
        answer = client.post("/v1/batch", json={"batch": [track(3), track(1), track(3)]}, headers=headers).json()
        assert (answer["accepted"], answer["duplicates"]) == (1, 2)
        assert client.post("/v1/batch", json={"batch": [track(3)]}, headers=headers).json()["duplicates"] == 1
        with service.lock:
            assert service.ws.engine.scalar("SELECT count(*) FROM events") == 3


def test_catalogue_and_stock_arrive_over_http_and_refused_rows_say_why(server, keys):
    _, made = keys
    w = basic(made["write"])
    rows = [
        {"store_id": "S01", "product_id": "P1", "quantity": 3, "as_of": "2026-10-01T10:00:00Z"},
        {"store_id": "S01", "product_id": "P2", "quantity": -1},
        "not a row",
    ]
    sent = httpx.post(f"{server.url}/v1/inventory", json={"rows": rows}, headers=w)
    assert sent.status_code == 200 and sent.json()["accepted"] == 1
    assert [r["index"] for r in sent.json()["rejected"]] == [1, 2]
    assert "quantity: -1 is outside 0 to 1,000,000" in sent.json()["rejected"][0]["reasons"][0]
    again = httpx.post(f"{server.url}/v1/inventory", json={"rows": rows[:1]}, headers=w)
    assert again.json() == {"success": True, "accepted": 0, "unchanged": 1}
    products = httpx.post(
        f"{server.url}/v1/catalogue", json={"rows": [{"product_id": "P1", "available": "no"}]}, headers=w
    )
    assert products.status_code == 200 and products.json()["accepted"] == 1
    refused = httpx.post(f"{server.url}/v1/catalogue", json={"rows": [{"price": 2}]}, headers=w)
    assert refused.status_code == 400
    assert "product_id is empty or missing" in refused.json()["rejected"][0]["reasons"][0]
    assert httpx.post(f"{server.url}/v1/inventory", json={"items": []}, headers=w).json()["code"] == "missing_field"
    r = basic(made["read"])
    stock = httpx.get(f"{server.url}/v1/stores/S01/inventory", headers=r).json()
    assert stock["products"] == [
        {"product_id": "P1", "quantity": 3.0, "in_stock": True, "as_of": "2026-10-01T10:00:00+00:00", "on_sale": False}
    ]
    nowhere = httpx.get(f"{server.url}/v1/stores/S99/inventory", headers=r)
    assert nowhere.status_code == 404 and "recent sales" in nowhere.json()["message"]
    assert httpx.post(f"{server.url}/v1/inventory", json={"rows": []}, headers=basic(made["read"])).status_code == 403
