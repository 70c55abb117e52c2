"""A durable queue between collectors and the log: collectors append what they staged, one loader moves it in.

A collector process (``omnithread serve --role collector``) validates and pseudonymises each request itself
(the same :meth:`Ingestor.stage` the log's own collector runs), appends the staged rows to the broker as one
entry, and answers once the broker has the entry: so no raw email, phone or template ever reaches the
broker, and a collector holds no engine and no lock. The loader (in the process that owns the log) reads
entries after the position the log last recorded and stores each group of entries together with the new
position in one transaction (:class:`omnithread.ingest.loader.Loader`): a crash before the commit reads the
same entries again, a crash after it starts past them, so each entry is stored exactly once.

:class:`Broker` is what the rest of omnithread asks of a broker; :class:`RedisStreams` implements it on a
Redis stream (``XADD``, ``XREAD``, ``XTRIM MINID``). Another broker (a Kafka topic with its offsets, say)
implements the same five methods. Positions are the broker's entry ids, compared by the broker.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from omnithread.engine.tables import EventRow, RejectedRow
from omnithread.errors import ConfigError, UnavailableError

__all__ = ["Broker", "RedisStreams", "open_broker", "encode_entry", "decode_entry", "START"]

START = "0"  # the position before every entry
_VERSION = 1
_EVENT_TIMES = {i for i, name in enumerate(EventRow._fields) if name.endswith("_at")}
_REJECTED_TIMES = {i for i, name in enumerate(RejectedRow._fields) if name.endswith("_at")}
_REJECTED_BYTES = RejectedRow._fields.index("payload_encrypted")


class Broker(Protocol):
    """A durable, ordered queue of entries (bytes), each with a position."""

    name: str

    def append(self, entry: bytes) -> str:
        """Add ``entry``; returns its position once the broker holds it durably (as durably as it is set up to)."""
        ...

    def read_after(self, position: str, count: int, block_seconds: float) -> list[tuple[str, bytes]]:
        """Up to ``count`` entries after ``position``, oldest first; waits up to ``block_seconds`` for one."""
        ...

    def trim(self, position: str) -> None:
        """Forget entries before ``position`` (the loader stored them)."""
        ...

    def backlog(self, position: str) -> int:
        """How many entries are after ``position`` (not yet loaded)."""
        ...

    def forget_trimmed(self) -> None:
        """Rewrite the broker's own files so trimmed entries leave the disk (after an erasure)."""
        ...

    def problems(self) -> list[str]:
        """Why the broker cannot be trusted with acknowledged events now (nothing when it can)."""
        ...

    def close(self) -> None:
        """Let go of the connection."""


class RedisStreams:
    """A Redis stream as the broker. Durable as the Redis server is set up: with ``appendonly yes`` and
    ``appendfsync always`` an acknowledged entry survives a kill -9 of Redis; :meth:`problems` says when the
    server runs with less."""

    name = "redis"

    def __init__(self, url: str, stream: str = "omnithread:events"):
        import redis

        self.url, self.stream = url, stream
        self._redis = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30)
        self._errors = (redis.RedisError, OSError)

    def _call(self, what: str, command, *args):
        try:
            return command(*args)
        except self._errors as exc:
            raise UnavailableError(
                f"the broker ({_shown(self.url)}) did not answer {what}: {type(exc).__name__}"
            ) from exc

    def append(self, entry: bytes) -> str:
        return self._call("an append", self._redis.xadd, self.stream, {b"e": entry}).decode()

    def read_after(self, position: str, count: int, block_seconds: float) -> list[tuple[str, bytes]]:
        block = max(1, int(block_seconds * 1000)) if block_seconds > 0 else None
        answer = self._call("a read", self._redis.xread, {self.stream: position}, count, block)
        if not answer:
            return []
        return [(entry_id.decode(), fields[b"e"]) for entry_id, fields in answer[0][1]]

    def trim(self, position: str) -> None:
        self._call("a trim", self._redis.xtrim, self.stream, None, False, position)

    def backlog(self, position: str) -> int:
        # entries after the position: the stream's length less those at or before it (trimmed up to it)
        entries = self._call(
            "a count", self._redis.xrange, self.stream, "(" + position if position != START else "-", "+"
        )
        return len(entries)

    def forget_trimmed(self) -> None:
        # the append-only file still holds every entry ever added until Redis rewrites it from the live data
        try:
            self._redis.bgrewriteaof()
        except self._errors as exc:
            if "already in progress" not in str(exc):
                raise UnavailableError(f"the broker ({_shown(self.url)}) did not rewrite its files: {exc}") from exc

    def problems(self) -> list[str]:
        try:
            config = self._redis.config_get("append*")
        except self._errors as exc:
            if "unknown command" in str(exc).lower() or "no permissions" in str(exc).lower():
                return []  # a managed server that hides its configuration: its operator vouches for it
            return [f"the broker ({_shown(self.url)}) does not answer: {type(exc).__name__}"]
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            return [
                f"the broker ({_shown(self.url)}) runs with appendonly {config.get('appendonly')!r}, appendfsync "
                f"{config.get('appendfsync')!r}: an acknowledged event can be lost if it stops; set appendonly yes "
                "and appendfsync always"
            ]
        return []

    def close(self) -> None:
        self._redis.close()


def _shown(url: str) -> str:
    """A broker's address without its password."""
    parts = urlsplit(url)
    host = parts.hostname or parts.path or "?"
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}"


def open_broker(url: str, stream: str = "omnithread:events") -> Broker:
    """The broker ``url`` names: ``redis://host:port/db`` (or ``rediss://``, ``unix://``)."""
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisStreams(url, stream)
    raise ConfigError("broker", _shown(url), "a Redis address: redis://host:port/db, rediss://... or unix://path")


# -- entries: the staged rows of one request, as JSON (no code is ever loaded from a broker)


def encode_entry(rows: list[EventRow], rejected: list[RejectedRow]) -> bytes:
    """One request's staged rows as a broker entry."""
    return orjson.dumps(
        {
            "v": _VERSION,
            "rows": [list(r) for r in rows],
            "rejected": [[_text(v) if isinstance(v, bytes) else v for v in r] for r in rejected],
        }
    )


def decode_entry(entry: bytes) -> tuple[list[EventRow], list[RejectedRow]]:
    """The rows of an entry :func:`encode_entry` made; an entry of another version or shape is refused."""
    try:
        data = orjson.loads(entry)
        if data.get("v") != _VERSION:
            raise ValueError(f"version {data.get('v')!r}, not {_VERSION}")
        rows = [EventRow(*_values(r, _EVENT_TIMES, None)) for r in data["rows"]]
        rejected = [RejectedRow(*_values(r, _REJECTED_TIMES, _REJECTED_BYTES)) for r in data["rejected"]]
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a broker entry of omnithread: {exc}") from None
    return rows, rejected


def _values(row: list, times: set[int], binary: int | None) -> list[Any]:
    """A row's values as stored: times read back, the binary column's base64 decoded."""
    return [
        (_time(v) if i in times else base64.b64decode(v) if i == binary and v is not None else v)
        for i, v in enumerate(row)
    ]


def _text(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
