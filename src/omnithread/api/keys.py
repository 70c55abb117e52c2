"""API keys with roles, and the audit log.

Keys and the audit log live in ``keys.sqlite`` in the data directory, apart from the event log, so
``omnithread keys`` can manage keys while ``omnithread serve`` runs (the event log's engine allows one
process). A key is shown once, at creation; only its keyed hash (HMAC-SHA256 under the installation
secret) is stored, and a presented key is compared with every active key's hash in constant time.

Roles: ``write`` keys may only send events; ``read`` keys may only read; ``admin`` keys manage keys,
consent and erasure. Each key has a rate limit (requests a second, token bucket). The audit log is
append-only: the code only ever inserts into it, and SQLite triggers refuse updates and deletes. It holds
no identifiers (actions are route templates, targets keyed digests) and refusals are counted per kind and
window (:meth:`KeyStore.refused`), so no client can make it grow faster than a fixed rate.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from omnithread.errors import InvalidRequestError, NotFoundError, UnavailableError
from omnithread.privacy.files import private_directory

__all__ = ["ROLES", "ApiKey", "KeyStore"]

ROLES = ("write", "read", "admin")
DEFAULT_RATE = {"write": 2000.0, "read": 200.0, "admin": 20.0}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, role TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE, name TEXT,
    rate_per_second REAL NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT);
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, key_id TEXT, role TEXT, action TEXT NOT NULL,
    target TEXT, outcome TEXT NOT NULL, detail TEXT);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    role: str
    name: str | None
    rate_per_second: float
    created_at: str
    revoked_at: str | None

    def as_dict(self) -> dict:
        return {
            "key_id": self.key_id,
            "role": self.role,
            "name": self.name,
            "rate_per_second": self.rate_per_second,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


class KeyStore:
    """Keys and the audit log of one data directory (``keys.sqlite``)."""

    REFUSAL_WINDOW = 60.0  # seconds over which refusals of one kind are counted into one entry
    REFUSAL_KINDS = 10_000  # kinds counted at once, past which refusals are counted together

    def __init__(self, data_dir: Path, secret):
        self.path = private_directory(data_dir) / "keys.sqlite"
        self._key = secret.derive("api keys")  # HKDF from the installation secret, apart from every other use
        self._lock = threading.Lock()
        try:
            self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise UnavailableError(
                f"the key store {self.path} cannot be opened for writing ({exc}); is the data directory read-only?"
            ) from None
        self._buckets: dict[str, tuple[float, float]] = {}
        self._cache: tuple[float, list] = (0.0, [])
        self._refusals: dict[tuple, list] = {}  # kind -> [window start, refusals after the first]
        self._refusal_lock = threading.Lock()
        self.refusals_not_audited = 0
        self._closed = threading.Event()
        threading.Thread(target=self._flusher, name="audit-refusals", daemon=True).start()

    def _hash(self, key: str) -> str:
        return hmac.new(self._key, key.encode(), hashlib.sha256).hexdigest()

    def create(self, role: str, name: str | None = None, rate_per_second: float | None = None) -> tuple[str, ApiKey]:
        """A new key: returns the key itself (shown once) and its record."""
        if role not in ROLES:
            raise InvalidRequestError("role", role, f"one of {', '.join(ROLES)}")
        key_id = secrets.token_hex(4)
        key = f"otk_{role}_{secrets.token_urlsafe(24)}"
        rate = float(rate_per_second if rate_per_second is not None else DEFAULT_RATE[role])
        now = datetime.now(UTC).isoformat()
        with self._lock:
            self._con.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)", (key_id, role, self._hash(key), name, rate, now)
            )
            self._cache = (0.0, [])
        return key, ApiKey(key_id, role, name, rate, now, None)

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._con.execute(
                "SELECT key_id, role, name, rate_per_second, created_at, revoked_at "
                "FROM api_keys ORDER BY created_at, key_id"
            ).fetchall()
        return [ApiKey(*r) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        with self._lock:
            done = self._con.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (datetime.now(UTC).isoformat(), key_id),
            ).rowcount
            self._cache = (0.0, [])
        if not done and not any(k.key_id == key_id for k in self.list()):
            raise NotFoundError("API key", key_id)
        return next(k for k in self.list() if k.key_id == key_id)

    def _active(self, max_age: float = 1.0) -> builtins.list[tuple]:
        # re-read at most once a second, so a key revoked by another process stops working within a second
        at, rows = self._cache
        if time.monotonic() - at > max_age:
            with self._lock:
                rows = self._con.execute(
                    "SELECT key_id, role, name, rate_per_second, created_at, revoked_at, key_hash "
                    "FROM api_keys WHERE revoked_at IS NULL"
                ).fetchall()
            self._cache = (time.monotonic(), rows)
        return rows

    def check(self, key: str | None) -> ApiKey | None:
        """The active key matching ``key`` (constant-time comparison against every one), else None."""
        if not key:
            return None
        presented = self._hash(key)
        found = self._match(self._active(), presented)
        if found is None:  # perhaps created a moment ago by another process (re-read at most 5 times a second)
            found = self._match(self._active(max_age=0.2), presented)
        return found

    @staticmethod
    def _match(rows, presented: str) -> ApiKey | None:
        found = None
        for row in rows:  # every row, every time: the time taken does not tell which key came close
            if hmac.compare_digest(row[6], presented):
                found = ApiKey(*row[:6])
        return found

    def allow(self, key: ApiKey) -> bool:
        """Token bucket: ``rate_per_second`` requests a second, bursts up to twice that."""
        now = time.monotonic()
        capacity = 2 * key.rate_per_second
        tokens, last = self._buckets.get(key.key_id, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * key.rate_per_second)
        if tokens < 1:
            self._buckets[key.key_id] = (tokens, now)
            return False
        self._buckets[key.key_id] = (tokens - 1, now)
        return True

    def audit(self, key: ApiKey | None, action: str, target: str | None, outcome: str, detail: str | None = None):
        """Append one entry. ``action`` names what was done (a route template, never a path that may hold an
        identifier) and ``target`` is a keyed digest or an id that names nobody. Raises
        :class:`UnavailableError` when the log cannot be written (a full disk): a read of personal data that
        cannot be audited is not answered."""
        try:
            with self._lock:
                self._insert(
                    datetime.now(UTC).isoformat(),
                    key.key_id if key else None,
                    key.role if key else None,
                    action,
                    target,
                    outcome,
                    detail,
                )
        except sqlite3.Error as exc:
            raise UnavailableError(
                f"the audit log cannot be written ({exc.__class__.__name__}); free space in the data directory"
            ) from None

    def _insert(self, at, key_id, role, action, target, outcome, detail) -> None:
        self._con.execute(
            "INSERT INTO audit_log (at, key_id, role, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at, key_id, role, action, target, outcome, detail),
        )

    def refused(self, key: ApiKey | None, action: str, outcome: str) -> None:
        """Record a refused request, aggregated so that no client can grow the log without bound: the first
        refusal of a kind (key, action, outcome) in a window of ``REFUSAL_WINDOW`` seconds is written at once,
        the others of the window are counted and written as one entry when it closes. Never raises: a
        refusal stays a refusal when the log cannot be written (a full disk)."""
        now = time.monotonic()
        kind = (key.key_id if key else None, key.role if key else None, action, outcome)
        with self._refusal_lock:
            self._flush_refusals(now)
            counted = self._refusals.get(kind)
            if counted is not None:
                counted[1] += 1
                return
            if len(self._refusals) >= self.REFUSAL_KINDS:  # more kinds than any real deployment has
                kind = (None, None, "(other refusals)", outcome)
                if kind in self._refusals:
                    self._refusals[kind][1] += 1
                    return
            self._refusals[kind] = [now, 0]
        self._write_refusal(kind, None)

    def _write_refusal(self, kind: tuple, more: int | None) -> None:
        key_id, role, action, outcome = kind
        detail = None if more is None else f"{more} more in the {self.REFUSAL_WINDOW:.0f} s after the first"
        try:
            with self._lock:
                self._insert(datetime.now(UTC).isoformat(), key_id, role, action, None, outcome, detail)
        except sqlite3.Error:
            self.refusals_not_audited += 1 if more is None else more

    def _flush_refusals(self, now: float, every: bool = False) -> None:
        """Write the counts of the windows that have closed (all of them with ``every``); call with the
        refusal lock held."""
        for kind, (started, more) in list(self._refusals.items()):
            if every or now - started >= self.REFUSAL_WINDOW:
                del self._refusals[kind]
                if more:
                    self._write_refusal(kind, more)

    def _flusher(self) -> None:
        while not self._closed.wait(self.REFUSAL_WINDOW / 4):
            with self._refusal_lock:
                self._flush_refusals(time.monotonic())

    def audit_entries(self, limit: int = 100) -> builtins.list[dict]:
        with self._lock:
            rows = self._con.execute(
                "SELECT seq, at, key_id, role, action, target, outcome, detail FROM audit_log "
                "ORDER BY seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
        names = ("seq", "at", "key_id", "role", "action", "target", "outcome", "detail")
        return [dict(zip(names, r)) for r in rows]

    def close(self) -> None:
        self._closed.set()
        with self._refusal_lock:
            self._flush_refusals(time.monotonic(), every=True)
        with self._lock:
            self._con.close()
