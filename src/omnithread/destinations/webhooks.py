"""Webhook destinations: events and audience changes sent to the tools a retailer already uses.

A destination is a URL with a signing secret and what it subscribes to: event names (or ``*``) and
audiences (their joins and leaves). ``enqueue`` moves what is new since the destination's cursor into its
outbox (``destination_outbox``), once: a delivery's id is stable, so a receiver can drop a repeat.
``Dispatcher`` delivers the outboxes:

- each destination has a sending thread of its own, so one slow or failing destination never delays
  another; the database is read and written by the calling thread only, between sends;
- each request is signed: ``X-Omnithread-Signature: sha256=<HMAC-SHA256(secret, timestamp + "." + body)>``
  with ``X-Omnithread-Timestamp`` and ``X-Omnithread-Delivery`` (the id), as Stripe and GitHub sign theirs;
- a failure (an error status, a timeout, a refused connection) is retried with exponential backoff and
  jitter (1 s, 2 s, 4 s ... up to an hour); after ``max_attempts`` the delivery is dead-lettered with its
  last error, kept, and can be replayed;
- per destination: delivered, pending, dead, attempts failed, and delivery latency (p50, p95).

Payloads carry what the log holds: person ids and pseudonymised identifiers, never raw contact details. The
signing secret is stored encrypted with the data directory's key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

import httpx
import pyarrow as pa

from omnithread.engine.base import Engine
from omnithread.errors import ConflictError, InvalidRequestError, NotFoundError

__all__ = [
    "add_destination",
    "remove_destination",
    "list_destinations",
    "enqueue",
    "Dispatcher",
    "replay_dead",
    "sign",
    "verify",
    "destination_metrics",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SIGNATURE_HEADER = "X-Omnithread-Signature"
TIMESTAMP_HEADER = "X-Omnithread-Timestamp"
DELIVERY_HEADER = "X-Omnithread-Delivery"
MAX_BACKOFF = 3600.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, tolerance: float = 300.0) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent (no replays)."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff(attempt: int, base: float = 1.0) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): doubling from ``base``, capped, with full jitter's half."""
    ceiling = min(MAX_BACKOFF, base * 2 ** (attempt - 1))
    return ceiling / 2 + random.random() * ceiling / 2


def _ensure(engine: Engine) -> None:
    engine.execute("""
        CREATE TABLE IF NOT EXISTS destinations (
            name VARCHAR PRIMARY KEY, url VARCHAR NOT NULL, secret VARCHAR NOT NULL, events VARCHAR[],
            audiences VARCHAR[], max_attempts INTEGER NOT NULL, timeout_seconds DOUBLE NOT NULL,
            event_cursor TIMESTAMPTZ, audience_cursor TIMESTAMPTZ, created_at TIMESTAMPTZ NOT NULL)""")
    engine.execute("""
        CREATE TABLE IF NOT EXISTS destination_outbox (
            id VARCHAR PRIMARY KEY, destination VARCHAR NOT NULL, kind VARCHAR NOT NULL, payload VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL, status VARCHAR NOT NULL, attempts INTEGER NOT NULL,
            next_attempt_at TIMESTAMPTZ NOT NULL, last_error VARCHAR, delivered_at TIMESTAMPTZ, latency_ms DOUBLE)""")


def add_destination(
    engine: Engine,
    cipher,
    name: str,
    url: str,
    secret: str,
    events: list[str] | None = None,
    audiences: list[str] | None = None,
    max_attempts: int = 8,
    timeout_seconds: float = 10.0,
    from_start: bool = False,
) -> dict:
    """Register a webhook destination. It receives what arrives from now on (``from_start``: the whole log)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError("name", name, "1 to 63 lower-case letters, digits, - or _")
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
        raise InvalidRequestError("url", url, "an http:// or https:// URL")
    if not isinstance(secret, str) or len(secret) < 16:
        raise InvalidRequestError("secret", "…", "a signing secret of at least 16 characters")
    if not events and not audiences:
        raise InvalidRequestError("events", events, "event names (or *) and/or audiences to send")
    if not 1 <= max_attempts <= 50:
        raise InvalidRequestError("max_attempts", max_attempts, "1 to 50")
    if not 0.1 <= timeout_seconds <= 120:
        raise InvalidRequestError("timeout_seconds", timeout_seconds, "0.1 to 120 seconds")
    _ensure(engine)
    if engine.scalar("SELECT count(*) FROM destinations WHERE name = ?", [name]):
        raise ConflictError(f"destination {name!r} exists", "remove it first or choose another name")
    now = datetime.now(UTC)
    start = None if from_start else now
    engine.execute(
        "INSERT INTO destinations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [name, url, cipher.encrypt_value(secret), list(events or []), list(audiences or []), max_attempts,
         float(timeout_seconds), start, start, now],
    )  # fmt: skip
    return next(d for d in list_destinations(engine) if d["name"] == name)


def remove_destination(engine: Engine, name: str) -> None:
    if not engine.has_table("destinations") or not engine.scalar(
        "SELECT count(*) FROM destinations WHERE name = ?", [name]
    ):
        raise NotFoundError("destination", name)
    engine.execute("DELETE FROM destinations WHERE name = ?", [name])
    engine.execute("DELETE FROM destination_outbox WHERE destination = ?", [name])


def list_destinations(engine: Engine) -> list[dict]:
    """Destinations with what they subscribe to and their metrics (never the secret)."""
    if not engine.has_table("destinations"):
        return []
    rows = engine.rows(
        "SELECT name, url, events, audiences, max_attempts, timeout_seconds, created_at FROM destinations ORDER BY 1"
    )
    metrics = {m["destination"]: m for m in destination_metrics(engine)}
    return [r | {k: v for k, v in metrics.get(r["name"], {}).items() if k != "destination"} for r in rows]


def destination_metrics(engine: Engine) -> list[dict]:
    """Per destination: deliveries by status, failed attempts, and delivery latency p50 and p95 (ms)."""
    if not engine.has_table("destination_outbox"):
        return []
    return engine.rows("""
        SELECT d.name AS destination,
               count(o.id) FILTER (WHERE o.status = 'delivered') AS delivered,
               count(o.id) FILTER (WHERE o.status = 'pending') AS pending,
               count(o.id) FILTER (WHERE o.status = 'dead') AS dead,
               CAST(coalesce(sum(o.attempts) - count(o.id) FILTER (WHERE o.status = 'delivered'), 0) AS BIGINT)
                   AS failed_attempts,
               round(quantile_cont(o.latency_ms, 0.5), 1) AS latency_p50_ms,
               round(quantile_cont(o.latency_ms, 0.95), 1) AS latency_p95_ms
        FROM destinations d LEFT JOIN destination_outbox o ON o.destination = d.name
        GROUP BY d.name ORDER BY d.name""")


def _delivery_id(destination: str, kind: str, key: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"omnithread:{destination}:{kind}:{key}").hex


def enqueue(engine: Engine) -> dict[str, int]:
    """Move into each destination's outbox the events and audience changes that arrived since its cursor;
    returns how many per destination. Idempotent: a delivery's id is derived from what it carries."""
    if not engine.has_table("destinations"):
        return {}
    out = {}
    now = datetime.now(UTC)
    for d in engine.rows("SELECT * FROM destinations ORDER BY name"):
        rows: list[dict] = []
        event_cursor, audience_cursor = d["event_cursor"], d["audience_cursor"]
        if d["events"]:
            names = [e for e in d["events"] if e != "*"]
            where = ["loaded_at > ?" if event_cursor else "true"]
            params: list[Any] = [event_cursor] if event_cursor else []
            if "*" not in d["events"]:
                where.append("event IN (" + ", ".join("?" * len(names)) + ")")
                params += names
            source = "event_persons" if engine.has_table("profiles") else "(SELECT *, NULL AS person_id FROM events)"
            found = engine.rows(
                f"""SELECT message_id, event, call, channel, store_id, event_at, loaded_at, user_id,
                           CAST(properties AS VARCHAR) AS properties, person_id
                    FROM {source} WHERE {" AND ".join(where)} ORDER BY loaded_at, message_id""",
                params,
            )
            for r in found:
                body = {
                    "type": "event",
                    "event": r["event"] or r["call"],
                    "message_id": r["message_id"],
                    "person_id": r["person_id"],  # None for a newcomer not yet folded into persons
                    "user_id": r["user_id"],  # the retailer's own account id (or the log's keyed hash)
                    "channel": r["channel"],
                    "store_id": r["store_id"],
                    "timestamp": r["event_at"].isoformat(),
                    "properties": json.loads(r["properties"]) if r["properties"] else {},
                }
                rows.append({"id": _delivery_id(d["name"], "event", r["message_id"]), "kind": "event", "body": body})
                event_cursor = max(event_cursor, r["loaded_at"]) if event_cursor else r["loaded_at"]
        if d["audiences"] and engine.has_table("audience_changes"):
            chosen = "audience IN (" + ", ".join("?" * len(d["audiences"])) + ")"
            params = list(d["audiences"])
            if audience_cursor:
                chosen += " AND changed_at > ?"
                params.append(audience_cursor)
            for r in engine.rows(
                f"SELECT * FROM audience_changes WHERE {chosen} ORDER BY changed_at, audience, person_id", params
            ):
                body = {
                    "type": "audience",
                    "audience": r["audience"],
                    "person_id": r["person_id"],
                    "change": r["change"],
                    "timestamp": r["changed_at"].isoformat(),
                }
                key = f"{r['audience']}:{r['person_id']}:{r['change']}:{r['changed_at'].isoformat()}"
                rows.append({"id": _delivery_id(d["name"], "audience", key), "kind": "audience", "body": body})
                audience_cursor = max(audience_cursor, r["changed_at"]) if audience_cursor else r["changed_at"]
        if rows:
            table = pa.table(
                {
                    "id": [r["id"] for r in rows],
                    "destination": [d["name"]] * len(rows),
                    "kind": [r["kind"] for r in rows],
                    "payload": [json.dumps(r["body"], separators=(",", ":"), default=str) for r in rows],
                    "created_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
                    "status": ["pending"] * len(rows),
                    "attempts": pa.array([0] * len(rows), pa.int32()),
                    "next_attempt_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
                    "last_error": pa.array([None] * len(rows), pa.string()),
                    "delivered_at": pa.array([None] * len(rows), pa.timestamp("us", tz="UTC")),
                    "latency_ms": pa.array([None] * len(rows), pa.float64()),
                }
            )
            with engine.transaction():
                engine.append_new("destination_outbox", table, "id")
                engine.execute(
                    "UPDATE destinations SET event_cursor = ?, audience_cursor = ? WHERE name = ?",
                    [event_cursor, audience_cursor, d["name"]],
                )
        out[d["name"]] = len(rows)
    return out


def replay_dead(engine: Engine, name: str | None = None) -> int:
    """Dead-lettered deliveries (of ``name``, or all) back to pending, attempts reset; how many."""
    if not engine.has_table("destination_outbox"):
        return 0
    where, params = ("AND destination = ?", [name]) if name else ("", [])
    n = engine.scalar(f"SELECT count(*) FROM destination_outbox WHERE status = 'dead' {where}", params)
    engine.execute(
        f"UPDATE destination_outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, last_error = NULL "
        f"WHERE status = 'dead' {where}",
        [datetime.now(UTC), *params],
    )
    return n


@dataclass
class _Outcome:
    id: str
    ok: bool
    error: str | None
    latency_ms: float


class Dispatcher:
    """Delivers the outboxes: one sending thread per destination, the database touched only by the thread
    that calls ``run``. ``post`` can be replaced (tests use a real server; the default is httpx)."""

    def __init__(self, engine: Engine, cipher, batch: int = 100, backoff_base: float = 1.0):
        self.engine, self.cipher, self.batch, self.backoff_base = engine, cipher, batch, backoff_base
        self.results: queue.Queue[_Outcome] = queue.Queue()
        self.workers: dict[str, tuple[threading.Thread, queue.Queue]] = {}
        self.in_flight: set[str] = set()
        self.stopping = threading.Event()

    def _worker(self, name: str, url: str, secret: str, timeout: float, inbox: queue.Queue) -> None:
        with httpx.Client(timeout=timeout) as client:
            while not self.stopping.is_set():
                try:
                    item = inbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                delivery, body = item
                stamp = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(secret, stamp, body),
                    TIMESTAMP_HEADER: stamp,
                    DELIVERY_HEADER: delivery,
                    "User-Agent": "omnithread-webhooks/1",
                }
                started = time.perf_counter()
                try:
                    answer = client.post(url, content=body, headers=headers)
                    ok = 200 <= answer.status_code < 300
                    error = None if ok else f"HTTP {answer.status_code}"
                except httpx.HTTPError as failure:
                    ok, error = False, f"{type(failure).__name__}: {failure}"[:300]
                self.results.put(_Outcome(delivery, ok, error, (time.perf_counter() - started) * 1000))

    def _ensure_workers(self) -> None:
        for d in self.engine.rows("SELECT name, url, secret, timeout_seconds FROM destinations"):
            if d["name"] not in self.workers:
                inbox: queue.Queue = queue.Queue()
                secret = str(self.cipher.decrypt_value(d["secret"]))
                thread = threading.Thread(
                    target=self._worker,
                    args=(d["name"], d["url"], secret, d["timeout_seconds"], inbox),
                    name=f"destination-{d['name']}",
                    daemon=True,
                )
                thread.start()
                self.workers[d["name"]] = (thread, inbox)

    def _hand_out(self) -> int:
        """Due deliveries not yet in flight, to their destinations' threads (a batch each)."""
        now = datetime.now(UTC)
        handed = 0
        for name, (_, inbox) in self.workers.items():
            due = self.engine.rows(
                "SELECT id, payload FROM destination_outbox WHERE destination = ? AND status = 'pending' "
                "AND next_attempt_at <= ? ORDER BY created_at, id LIMIT ?",
                [name, now, self.batch],
            )
            for row in due:
                if row["id"] in self.in_flight:
                    continue
                self.in_flight.add(row["id"])
                inbox.put((row["id"], row["payload"].encode()))
                handed += 1
        return handed

    def _record(self, outcomes: list[_Outcome]) -> None:
        now = datetime.now(UTC)
        with self.engine.transaction():
            for o in outcomes:
                self.in_flight.discard(o.id)
                if o.ok:
                    self.engine.execute(
                        "UPDATE destination_outbox SET status = 'delivered', attempts = attempts + 1, "
                        "delivered_at = ?, latency_ms = ?, last_error = NULL WHERE id = ?",
                        [now, o.latency_ms, o.id],
                    )
                    continue
                row = self.engine.rows(
                    "SELECT o.attempts, d.max_attempts FROM destination_outbox o "
                    "JOIN destinations d ON d.name = o.destination WHERE o.id = ?",
                    [o.id],
                )
                if not row:
                    continue  # its destination was removed meanwhile
                attempts = row[0]["attempts"] + 1
                if attempts >= row[0]["max_attempts"]:
                    self.engine.execute(
                        "UPDATE destination_outbox SET status = 'dead', attempts = ?, last_error = ? WHERE id = ?",
                        [attempts, o.error, o.id],
                    )
                else:
                    later = now + timedelta(seconds=backoff(attempts, self.backoff_base))
                    self.engine.execute(
                        "UPDATE destination_outbox SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE id = ?",
                        [attempts, o.error, later, o.id],
                    )

    def step(self, wait: float = 0.0) -> int:
        """One round, for a loop of someone else's (the server's schedule): enqueue what is new, hand out
        what is due, record what came back (waiting up to ``wait`` s for a first answer); how many recorded."""
        if not self.engine.has_table("destinations"):
            return 0
        enqueue(self.engine)
        self._ensure_workers()
        self._hand_out()
        outcomes = []
        try:
            outcomes.append(self.results.get(timeout=wait) if wait else self.results.get_nowait())
            while True:
                outcomes.append(self.results.get_nowait())
        except queue.Empty:
            pass
        if outcomes:
            self._record(outcomes)
        return len(outcomes)

    def run(self, until: Callable[[], bool] | None = None, seconds: float = 60.0, poll: float = 0.05) -> dict:
        """Enqueue and deliver until nothing is pending or in flight (or ``until()`` is true, or ``seconds``
        pass); returns the metrics per destination."""
        if not self.engine.has_table("destinations"):
            return {}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            self.step(wait=poll)
            pending = self.engine.scalar("SELECT count(*) FROM destination_outbox WHERE status = 'pending'")
            if until is None and not pending and not self.in_flight:
                break
        return {m["destination"]: m for m in destination_metrics(self.engine)}

    def close(self) -> None:
        self.stopping.set()
        for thread, _ in self.workers.values():
            thread.join(timeout=5)
