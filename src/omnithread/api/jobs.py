"""Jobs: the work a running server does beside collecting, one at a time, in the open.

A job is one command of omnithread's (``resolve``, ``train``, ``ingest`` a file, ``erase`` a person...) that a
running server does for the command line, for its own schedule or for its drop folder. Jobs live in
``jobs.sqlite`` in the data directory, apart from the event log, so ``omnithread jobs`` reads them from any
process while the server runs. One worker thread takes queued jobs oldest first; a job that was running when
its server died is queued again when the next one starts (it runs again: every job is safe to repeat, as the
commands are). A job runs on a connection of its own to the log, never under the collector's lock, so
collection does not wait for it.

What a job runs is handed in by the edge that starts the server (the command line runs its own commands in
process), so this layer knows nothing of the commands themselves.

A command's words may name a person (``omnithread erase jane@example.org``) and what it printed may quote
them back (``no person with id '...'``), so neither is kept as given: the words and the output are stored
encrypted (the payload cipher, as refused events are), and what ``omnithread jobs`` and the API list is the
words through the personal-data rule (an email becomes its keyed hash). Only whoever handed in the job (the
command line, with its server's token) or can read the data directory gets the output back whole.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from omnithread.errors import NotFoundError, safe_message
from omnithread.privacy.crypto import PayloadCipher
from omnithread.privacy.files import private_directory

__all__ = ["Job", "JobStore", "JobWorker", "JOB_STATES", "JobOutcome", "CONTROL_HEADER", "report_progress"]

JOB_STATES = ("queued", "running", "done", "failed")
CONTROL_HEADER = "x-omnithread-control"  # the header the command line presents its server's token in
_MAX_OUTPUT = 1 << 20  # what of a job's output is kept (its first MB)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, argv TEXT NOT NULL, sealed_argv TEXT NOT NULL,
    origin TEXT NOT NULL, state TEXT NOT NULL,
    progress TEXT, columns INTEGER, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
    runs INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, stdout TEXT, stderr TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
"""


_running = threading.local()  # the job this thread runs: (store, job id, when progress was last written)


def report_progress(text: str) -> None:
    """Say how far the job this thread runs has got (``omnithread jobs``, the API); nothing outside a job.
    Written at most twice a second."""
    current = getattr(_running, "job", None)
    if current is None:
        return
    store, job_id, last = current
    now = time.monotonic()
    if now - last >= 0.5:
        store.progress(job_id, text)
        _running.job = (store, job_id, now)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class JobOutcome:
    """What running a job gave: the exit code and what it printed."""

    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    argv: list[str]
    origin: str
    state: str
    progress: str | None
    columns: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    runs: int
    exit_code: int | None
    stdout: str | None
    stderr: str | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = datetime.fromisoformat(self.finished_at) if self.finished_at else datetime.now(UTC)
        return round((end - datetime.fromisoformat(self.started_at)).total_seconds(), 3)

    def as_dict(self, output: bool = True) -> dict:
        shown = {
            "job_id": self.job_id,
            "kind": self.kind,
            "argv": self.argv,
            "origin": self.origin,
            "state": self.state,
            "progress": self.progress,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": self.seconds,
            "runs": self.runs,
            "exit_code": self.exit_code,
            "error": self.error,
        }
        if output:
            shown.update(stdout=self.stdout, stderr=self.stderr)
        return shown


class JobStore:
    """The jobs of one data directory (``jobs.sqlite``), safe to use from several threads and processes.

    ``cipher`` seals a job's words and output; ``shown`` is the personal-data rule over one string (the words
    a listing shows)."""

    def __init__(self, data_dir: Path, cipher: PayloadCipher, shown: Callable[[str], str]):
        self._cipher, self._shown = cipher, shown
        private_directory(data_dir)
        self.path = data_dir / "jobs.sqlite"
        self._con = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        with self._lock:
            self._con.executescript(_SCHEMA)
        self.path.chmod(0o600)

    def _rows(self, sql: str, params: tuple = ()) -> list[Job]:
        with self._lock:
            cursor = self._con.execute(sql, params)
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        jobs = []
        for row in rows:
            values = dict(zip(names, row))
            values["argv"] = json.loads(values["argv"])
            del values["sealed_argv"]
            for name in ("stdout", "stderr"):
                if values[name] is not None:
                    values[name] = str(self._cipher.decrypt_value(values[name]))
            jobs.append(Job(**values))
        return jobs

    def argv_to_run(self, job_id: str) -> list[str]:
        """A job's words as they were handed in (what listings show has identifiers hashed)."""
        with self._lock:
            row = self._con.execute("SELECT sealed_argv FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError("job", job_id)
        return [str(a) for a in self._cipher.decrypt_value(row[0])]  # type: ignore[attr-defined]

    def _write(self, sql: str, params: tuple) -> int:
        with self._lock:
            return self._con.execute(sql, params).rowcount

    def submit(self, kind: str, argv: list[str], origin: str, columns: int | None = None) -> Job:
        """Queue a job (``columns``: the width of the terminal its output is for); returns it."""
        job_id = "job_" + uuid.uuid4().hex[:16]
        shown = [self._shown(a) for a in argv]
        self._write(
            "INSERT INTO jobs (job_id, kind, argv, sealed_argv, origin, state, columns, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
            (job_id, self._shown(kind), json.dumps(shown), self._cipher.encrypt_value(argv), origin, columns, _now()),
        )
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        found = self._rows("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        if not found:
            raise NotFoundError("job", job_id)
        return found[0]

    def list(self, states: tuple[str, ...] = JOB_STATES, limit: int = 50) -> list[Job]:
        """The newest jobs in ``states``, newest first."""
        marks = ", ".join("?" for _ in states)
        return self._rows(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at DESC LIMIT ?", (*states, limit)
        )

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        with self._lock:
            return dict(self._con.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())

    def active(self, kind: str) -> Job | None:
        """A job of ``kind`` queued or running, if there is one (so a schedule queues it once)."""
        found = self._rows(
            "SELECT * FROM jobs WHERE kind = ? AND state IN ('queued', 'running') ORDER BY created_at LIMIT 1", (kind,)
        )
        return found[0] if found else None

    def take(self) -> Job | None:
        """The oldest queued job, now marked running (None when none waits)."""
        with self._lock:
            row = self._con.execute(
                "SELECT job_id FROM jobs WHERE state = 'queued' ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._con.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, runs = runs + 1, progress = NULL WHERE job_id = ?",
                (_now(), row[0]),
            )
        return self.get(row[0])

    def progress(self, job_id: str, text: str) -> None:
        self._write("UPDATE jobs SET progress = ? WHERE job_id = ?", (text[:200], job_id))

    def finish(self, job_id: str, outcome: JobOutcome) -> None:
        self._write(
            "UPDATE jobs SET state = ?, finished_at = ?, exit_code = ?, stdout = ?, stderr = ? WHERE job_id = ?",
            (
                "done" if outcome.exit_code == 0 else "failed",
                _now(),
                outcome.exit_code,
                self._cipher.encrypt_value(outcome.stdout[:_MAX_OUTPUT]),
                self._cipher.encrypt_value(outcome.stderr[:_MAX_OUTPUT]),
                job_id,
            ),
        )

    def fail(self, job_id: str, error: str) -> None:
        self._write(
            "UPDATE jobs SET state = 'failed', finished_at = ?, exit_code = 1, error = ? WHERE job_id = ?",
            (_now(), error[:2000], job_id),
        )

    def requeue_interrupted(self) -> int:
        """Jobs left running by a server that stopped without finishing them: queued again (they run again)."""
        return self._write(
            "UPDATE jobs SET state = 'queued', progress = 'interrupted; queued again' WHERE state = 'running'", ()
        )

    def close(self) -> None:
        with self._lock:
            self._con.close()


class JobWorker:
    """One thread that runs queued jobs, oldest first, with ``run`` (handed in by the edge that starts it).

    ``after`` is called with each finished job (the server reloads what the job may have changed there)."""

    def __init__(
        self,
        store: JobStore,
        run: Callable[[Job], JobOutcome],
        after: Callable[[Job], None] = lambda job: None,
        poll_seconds: float = 0.2,
    ):
        self.store, self._run, self._after, self._poll = store, run, after, poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobs", daemon=True)

    def start(self) -> None:
        self.store.requeue_interrupted()
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Take no new job; wait up to ``timeout`` seconds for the running one. True when none runs."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.take()
            if job is None:
                self._wake.wait(self._poll)
                self._wake.clear()
                continue
            _running.job = (self.store, job.job_id, 0.0)
            try:
                outcome = self._run(replace(job, argv=self.store.argv_to_run(job.job_id)))
            except BaseException as exc:  # noqa: BLE001 - a job's failure is the job's, never the worker's
                self.store.fail(job.job_id, safe_message(exc))  # (no values: a message may quote one)
            else:
                self.store.finish(job.job_id, outcome)
            finally:
                _running.job = None
            done = self.store.get(job.job_id)
            try:
                self._after(done)
            except Exception:  # noqa: BLE001, S110 - reloading after a job must not stop the worker
                pass
