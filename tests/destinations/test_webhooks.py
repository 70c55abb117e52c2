"""Webhook destinations against real HTTP receivers on loopback: signed deliveries, exactly once per
delivery id, a slow destination that does not hold up a fast one, retries with backoff, dead letters and
their replay, and audience changes."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from omnithread.analytics.audiences import create_audience
from omnithread.destinations import webhooks
from omnithread.errors import ConflictError, InvalidRequestError

SECRET = "a receiver's signing secret"


class Receiver:
    """A real HTTP server: /ok answers 200, /slow after 0.3 s, /flaky 500 twice per delivery then 200,
    /down always 500. It keeps every request."""

    def __init__(self):
        self.requests: dict[str, list[dict]] = defaultdict(list)
        self.tries: dict[str, int] = defaultdict(int)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                path = self.path.strip("/")
                delivery = self.headers[webhooks.DELIVERY_HEADER]
                receiver.tries[f"{path}:{delivery}"] += 1
                if path == "slow":
                    time.sleep(0.3)
                status = 200
                if path == "down" or (path == "flaky" and receiver.tries[f"{path}:{delivery}"] <= 2):
                    status = 500
                if status == 200:
                    receiver.requests[path].append(
                        {"body": body, "headers": dict(self.headers), "at": time.monotonic()}
                    )
                self.send_response(status)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def ws(handmade):
    return handmade


def _add(ws, name, url, **options):
    return webhooks.add_destination(ws.engine, ws.cipher, name, url, SECRET, from_start=True, **options)


def test_deliveries_are_signed_and_each_is_sent_once(ws, receiver):
    _add(ws, "shop-events", f"{receiver.url}/ok", events=["Order Completed"])
    dispatcher = webhooks.Dispatcher(ws.engine, ws.cipher)
    try:
        metrics = dispatcher.run(seconds=30)
        got = receiver.requests["ok"]
        orders = ws.engine.scalar("SELECT count(*) FROM events WHERE event = 'Order Completed'")
        assert len(got) == orders == 4 and metrics["shop-events"]["delivered"] == 4
        for request in got:
            headers = {k.lower(): v for k, v in request["headers"].items()}
            assert webhooks.verify(
                SECRET, headers["x-omnithread-timestamp"], request["body"], headers["x-omnithread-signature"]
            )
            assert not webhooks.verify("another secret entirely", headers["x-omnithread-timestamp"],
                                       request["body"], headers["x-omnithread-signature"])  # fmt: skip
            body = json.loads(request["body"])
            assert body["type"] == "event" and body["event"] == "Order Completed" and body["person_id"]
        assert len({r["headers"]["X-Omnithread-Delivery"] for r in got}) == 4
        # nothing new: nothing sent again
        dispatcher.run(seconds=5)
        assert len(receiver.requests["ok"]) == 4
        assert webhooks.enqueue(ws.engine) == {"shop-events": 0}
    finally:
        dispatcher.close()
    listed = webhooks.list_destinations(ws.engine)[0]
    assert "secret" not in listed and listed["delivered"] == 4 and listed["latency_p50_ms"] > 0


def test_a_slow_destination_does_not_hold_up_another(ws, receiver):
    _add(ws, "slow-one", f"{receiver.url}/slow", events=["*"])
    _add(ws, "fast-one", f"{receiver.url}/ok", events=["*"])
    events = ws.engine.scalar("SELECT count(*) FROM events")
    dispatcher = webhooks.Dispatcher(ws.engine, ws.cipher, batch=1000)
    started = time.monotonic()
    try:
        dispatcher.run(until=lambda: len(receiver.requests["ok"]) >= events, seconds=30)
        fast_done = time.monotonic() - started
        assert len(receiver.requests["ok"]) == events
        # the slow receiver takes 0.3 s a request, one at a time: it is far from done when the fast one is
        assert len(receiver.requests["slow"]) < events / 2 and fast_done < events * 0.3 / 2
        metrics = dispatcher.run(seconds=30)
        assert metrics["slow-one"]["delivered"] == metrics["fast-one"]["delivered"] == events
    finally:
        dispatcher.close()


def test_failures_are_retried_with_backoff_then_dead_lettered_and_replayed(ws, receiver):
    _add(ws, "flaky", f"{receiver.url}/flaky", events=["Order Completed"], max_attempts=5)
    _add(ws, "down", f"{receiver.url}/down", events=["Order Completed"], max_attempts=3)
    dispatcher = webhooks.Dispatcher(ws.engine, ws.cipher, backoff_base=0.05)
    try:
        metrics = dispatcher.run(seconds=30)
    finally:
        dispatcher.close()
    assert metrics["flaky"]["delivered"] == 4 and metrics["flaky"]["failed_attempts"] == 8  # two 500s each
    assert metrics["down"]["dead"] == 4 and metrics["down"]["delivered"] == 0
    dead = ws.engine.rows("SELECT attempts, last_error FROM destination_outbox WHERE status = 'dead'")
    assert {(r["attempts"], r["last_error"]) for r in dead} == {(3, "HTTP 500")}
    assert webhooks.replay_dead(ws.engine, "down") == 4
    assert ws.engine.scalar("SELECT count(*) FROM destination_outbox WHERE status = 'pending'") == 4


def test_audience_changes_are_sent(ws, receiver):
    create_audience(ws.engine, "repeat-buyers", "orders >= 2")
    _add(ws, "crm", f"{receiver.url}/ok", audiences=["repeat-buyers"])
    dispatcher = webhooks.Dispatcher(ws.engine, ws.cipher)
    try:
        dispatcher.run(seconds=30)
    finally:
        dispatcher.close()
    bodies = [json.loads(r["body"]) for r in receiver.requests["ok"]]
    alice = ws.engine.scalar("SELECT person_id FROM profiles WHERE orders = 3")
    assert bodies == [
        {
            "type": "audience",
            "audience": "repeat-buyers",
            "person_id": alice,
            "change": "joined",
            "timestamp": bodies[0]["timestamp"],
        }
    ]


def test_backoff_doubles_up_to_an_hour():
    for attempt, ceiling in ((1, 1), (2, 2), (5, 16), (30, 3600)):
        waits = [webhooks.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)


@pytest.mark.parametrize(
    "name, url, secret, events, field",
    [
        ("Bad Name", "http://x", SECRET, ["*"], "name"),
        ("ok", "ftp://x", SECRET, ["*"], "url"),
        ("ok", "http://x", "short", ["*"], "secret"),
        ("ok", "http://x", SECRET, [], "events"),
    ],
)
def test_bad_destinations_are_refused_naming_the_field(ws, name, url, secret, events, field):
    with pytest.raises(InvalidRequestError) as caught:
        webhooks.add_destination(ws.engine, ws.cipher, name, url, secret, events=events)
    assert caught.value.field == field and (field != "secret" or secret not in str(caught.value))


def test_a_destination_name_is_taken_once(ws, receiver):
    _add(ws, "one", f"{receiver.url}/ok", events=["*"])
    with pytest.raises(ConflictError):
        _add(ws, "one", f"{receiver.url}/ok", events=["*"])
    webhooks.remove_destination(ws.engine, "one")
    assert webhooks.list_destinations(ws.engine) == []
