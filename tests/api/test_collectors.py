"""Collectors of their own behind a broker: ``serve --role collector`` processes stage each request and append
it to a Redis stream; the server that owns the log loads it, each entry exactly once. Real Redis servers
(Debian's ``redis-server``, append-only file on) and real omnithread processes, killed with SIGKILL."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest

from omnithread.api.app import Service
from omnithread.api.keys import KeyStore
from omnithread.config import Settings
from omnithread.engine.tables import EventRow, RejectedRow
from omnithread.errors import ConfigError
from omnithread.flows import erase
from omnithread.ingest.broker import RedisStreams, decode_entry, encode_entry, open_broker
from omnithread.ingest.loader import Loader
from omnithread.ingest.pipeline import Ingestor
from omnithread.privacy import PayloadCipher, Pseudonymiser, load_secret
from tests.conftest import RedisServer, Server


def call(n: int, prefix: str = "m") -> dict:
    return {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": f"device-{n % 7}",
        "messageId": f"{prefix}-{n}",
        "properties": {"product_id": f"P{n % 11}"},
    }


def staged(data_dir: Path, calls: list[dict]) -> tuple[list[EventRow], list[RejectedRow]]:
    secret = load_secret(data_dir)
    ingestor = Ingestor(
        None, Pseudonymiser(secret), PayloadCipher(secret), Settings(data_dir=data_dir), datetime.now(UTC)
    )
    raw = orjson.dumps({"batch": calls})
    done = ingestor.stage(orjson.loads(raw), raw, "test")
    return done.rows, done.rejected


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def stored_ids(data_dir: Path) -> list[str]:
    with duckdb.connect(str(data_dir / "omnithread.duckdb"), read_only=True) as con:
        return [r[0] for r in con.execute("SELECT message_id FROM events").fetchall()]


def test_an_entry_round_trips_and_anything_else_is_refused(tmp_path):
    rows, rejected = staged(
        tmp_path,
        [
            call(1),
            {"type": "track", "event": "Order Completed", "messageId": "bad", "anonymousId": "d", "properties": {}},
        ],
    )
    assert len(rows) == 1 and len(rejected) == 1
    back_rows, back_rejected = decode_entry(encode_entry(rows, rejected))
    assert back_rows == rows  # datetimes with their zone, JSON text, None
    assert back_rejected == rejected  # the encrypted payload's bytes, the reason codes' list
    for entry in (
        b"garbage",
        orjson.dumps({"v": 99, "rows": [], "rejected": []}),
        orjson.dumps({"v": 1, "rows": [[1]]}),
    ):
        with pytest.raises(ValueError, match="not a broker entry"):
            decode_entry(entry)
    with pytest.raises(ConfigError, match="broker"):
        open_broker("http://user:secret@host/")
    with pytest.raises(ConfigError) as refused:
        Settings(broker="kafka://user:hunter2@host:9092")
    assert "hunter2" not in str(refused.value)


def test_the_loader_stores_each_entry_once_whatever_step_it_dies_at(tmp_path, redis_server):
    data = tmp_path / "data"
    service = Service(Settings(data_dir=data, broker=redis_server.url, refresh_seconds=0))
    try:
        broker = service.broker
        assert isinstance(broker, RedisStreams)
        for k in range(3):  # three requests, the third repeating a message id of the first (a client's retry)
            broker.append(encode_entry(*staged(data, [call(n) for n in range(k * 10, k * 10 + 10)] + [call(k)])))

        # dies inside the transaction (after the events' insert): nothing of the group stays
        loader = Loader(broker, lambda: service.ws.log.broker_position(service.broker_stream), service._load, None)
        original = service.ws.log.record_broker_position
        service.ws.log.record_broker_position = lambda *a: (_ for _ in ()).throw(OSError("disk gone"))
        with pytest.raises(OSError):
            loader.load_once()
        service.ws.log.record_broker_position = original
        service.forget_keys()
        assert service.ws.log.count() == 0

        # dies after the commit, before trimming the broker or noting the position: a new loader starts past it
        loader = Loader(broker, lambda: service.ws.log.broker_position(service.broker_stream), service._load, None)
        broker_trim, broker.trim = broker.trim, lambda position: None
        loader.entries_per_group = 2
        loader.load_once()
        assert service.ws.log.count() == 20
        broker.trim = broker_trim
        again = Loader(broker, lambda: service.ws.log.broker_position(service.broker_stream), service._load, None)
        assert again.backlog() == 1
        assert again.drain().entries == 1
        ids = sorted(service.ws.log.engine.query("SELECT message_id FROM events").column(0).to_pylist())
        assert ids == sorted({f"m-{n}" for n in range(30)})  # 33 calls sent, 30 message ids, each stored once
        assert again.backlog() == 0
        assert broker.backlog("0") <= 1  # trimmed up to what is stored
    finally:
        service.close()


def test_an_entry_that_is_not_ours_is_kept_with_its_reason_and_loading_goes_on(tmp_path, redis_server):
    data = tmp_path / "data"
    service = Service(Settings(data_dir=data, broker=redis_server.url, refresh_seconds=0))
    try:
        assert service.broker is not None and service.loader is not None
        service.broker.append(b'{"not": "an entry"}')
        service.broker.append(encode_entry(*staged(data, [call(1)])))
        moved = service.loader.drain()
        assert (moved.entries, moved.rows, moved.bad_entries) == (2, 1, 1)
        assert service.ws.log.count() == 1
        kept = service.ws.log.rejected()
        assert len(kept) == 1 and kept[0]["reason_codes"] == ["bad_broker_entry"]
        assert kept[0]["source"].startswith("broker:redis:")
    finally:
        service.close()


def test_a_collector_needs_a_broker_and_says_when_the_broker_is_not_durable(tmp_path):
    env = dict(os.environ, OMNITHREAD_DATA_DIR=str(tmp_path / "data"))
    env.pop("OMNITHREAD_BROKER", None)
    done = subprocess.run(
        [sys.executable, "-c", "from omnithread.cli.main import main; main()", "serve", "--role", "collector"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "broker" in done.stderr and "Traceback" not in done.stderr
    lax = RedisServer(tmp_path / "lax", fsync="everysec").start()
    collector = Server(tmp_path / "data", {"OMNITHREAD_BROKER": lax.url}, ("--role", "collector"))
    collector.ready_statuses = (503,)
    try:
        collector.start()
        health = httpx.get(f"{collector.url}/health").json()
        assert health["role"] == "collector" and "appendfsync 'everysec'" in health["reasons"][0]
        assert httpx.get(f"{collector.url}/ready").status_code == 503
        assert httpx.get(f"{collector.url}/v1/persons/x").status_code == 404  # a collector serves no reads
    finally:
        collector.stop()
        lax.stop()


def test_collectors_loader_and_broker_killed_mid_load_lose_nothing_acknowledged_and_store_nothing_twice(
    tmp_path, redis_server
):
    data = tmp_path / "data"
    store = KeyStore(data, load_secret(data))
    key = store.create("write", "load", rate_per_second=1e9)[0]
    store.close()
    env = {"OMNITHREAD_BROKER": redis_server.url, "OMNITHREAD_REFRESH_SECONDS": "0", "OMNITHREAD_RETRAIN_HOURS": "0"}
    owner = Server(data, env).start()
    collectors = [Server(data, env, ("--role", "collector")).start() for _ in range(2)]
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    acknowledged: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def client(c: int) -> None:
        n = 0
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                calls = [call(n * 20 + i, f"c{c}") for i in range(20)]
                if n == 3 and c == 0:  # a raw email among them: pseudonymised before it reaches the broker
                    calls.append(
                        {
                            "type": "identify",
                            "userId": "u-1",
                            "messageId": f"c{c}-id",
                            "traits": {"email": "Raw.Person@Example.com"},
                        }
                    )
                body = orjson.dumps({"batch": calls})
                for attempt in range(400):  # retried, on the other collector too, until answered
                    target = collectors[(c + attempt) % 2]
                    try:
                        answer = http.post(f"{target.url}/v1/batch", content=body, headers=auth)
                        if answer.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.05)
                else:
                    raise AssertionError("a batch was never answered")
                with lock:
                    acknowledged.extend(x["messageId"] for x in calls)
                n += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        collectors[0].kill()  # a collector dies: clients go on through the other
        time.sleep(1)
        collectors[0].start()
        owner.kill()  # the loader dies: collectors go on acknowledging into the broker
        time.sleep(1.5)
        owner.start()
        redis_server.kill()  # the broker dies: requests fail until it is back, nothing acknowledged is lost
        time.sleep(0.5)
        redis_server.start()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(60)
        deadline = time.time() + 60
        while httpx.get(f"{owner.url}/health").json()["broker"]["backlog"] and time.time() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for collector in collectors:
            collector.stop()
        owner.stop()
    ids = stored_ids(data)
    assert len(acknowledged) > 1000
    assert set(acknowledged) <= set(ids), "acknowledged events are missing"
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert b"Raw.Person" not in redis_server.files() and b"raw.person@example.com" not in redis_server.files()
    redis_server.stop()


def test_after_an_erasure_the_loader_refuses_the_person_and_the_broker_files_forget_them(tmp_path, redis_server):
    data = tmp_path / "data"
    service = Service(Settings(data_dir=data, broker=redis_server.url, refresh_seconds=0))
    try:
        assert service.broker is not None and service.loader is not None
        person = {"type": "identify", "userId": "cust-991", "messageId": "who", "traits": {"email": "gone@example.org"}}
        rows, rejected = staged(data, [person, {**call(1), "userId": "cust-991"}])
        hashed = orjson.loads(rows[0].traits)["email"]
        assert hashed.startswith("em_")  # what the broker and the log hold of the email: a keyed hash
        service.broker.append(encode_entry(rows, rejected))
        service.loader.drain()
        assert service.ws.log.count() == 2
        with service.work_lock:
            erase(service.worker, "gone@example.org")
        service.changed(model=False)
        late = staged(data, [{**call(2), "userId": "cust-991"}, call(3)])  # sent before the erasure reached it
        service.broker.append(encode_entry(*late))
        assert hashed.encode() in redis_server.files()
        service.loader.start()
        service.erased()
        deadline = time.time() + 30
        while hashed.encode() in redis_server.files() and time.time() < deadline:
            time.sleep(0.2)
        assert hashed.encode() not in redis_server.files()  # the rewritten append-only file holds what waits only
        ids = service.ws.log.engine.query("SELECT message_id FROM events").column(0).to_pylist()
        assert ids == ["m-3"]  # the person's events are gone, the late one refused at the loader, the other stored
    finally:
        service.close()
