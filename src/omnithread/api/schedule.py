"""What a running server does by itself: the thread from events to recommendations, without anyone to start it.

- **Persons follow the log**: every ``refresh_seconds`` (or four times as long as the last refresh took,
  whichever is longer) the events that arrived since are folded into persons and profiles (incremental
  resolution), on the server's work connection, never under the collector's lock;
  skipped while a job holds the work (the next tick catches up).
- **The model follows the persons**: after ``retrain_events`` new events (no more often than every
  ``retrain_min_minutes``) or ``retrain_hours``, whichever comes first, a ``train`` job is queued, keeping the
  serving rules of the model it replaces; the job trains into a folder of its own and swaps it in, and the
  server loads the new model beside the old and then answers from it, so no request waits or fails.
- **The drop folder**: a file dropped into ``drop_dir`` is imported once it has not changed for
  ``drop_settle_seconds`` (so a file still being written is never imported half; writing it under a name
  starting with ``.`` or ending in ``.part`` or ``.tmp`` and renaming it when whole is safer still). It is
  moved into ``processing/`` and imported by a job (``ingest`` for events and till exports, ``catalogue`` for
  ``catalogue*.csv``, ``inventory`` for ``inventory*.csv`` and ``stock*.csv``), then moved to ``done/`` with
  the import's report beside it, or to ``failed/`` with its reasons. A server that stops mid-import imports
  the file again when it starts (imports are idempotent: a message id is stored once).
- **Destinations**: every tick, events and audience changes new since each webhook destination's cursor go
  to its outbox and out (``omnithread.destinations.webhooks``: a thread per destination, retries, dead
  letters), on the work connection between jobs.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from omnithread.api.jobs import Job
from omnithread.destinations.webhooks import Dispatcher
from omnithread.errors import safe_message
from omnithread.flows import refresh_persons

__all__ = ["Schedule", "drop_command"]

_log = logging.getLogger("omnithread.schedule")
_SKIPPED_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload")
_TICK = 0.5


def drop_command(path: Path) -> list[str] | None:
    """The command that imports a dropped file (without the file and data directory), or None for a kind of
    file the drop folder does not import."""
    name, suffix = path.name.lower(), path.suffix.lower()
    if suffix == ".csv" and name.startswith(("catalogue", "catalog")):
        return ["catalogue"]
    if suffix == ".csv" and name.startswith(("inventory", "stock")):
        return ["inventory"]
    if suffix in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"):
        return ["ingest"]
    return None


class Schedule:
    def __init__(self, service):
        self.service = service
        self.settings = service.settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="schedule", daemon=True)
        self._last_refresh = 0.0
        self._refresh_took = 0.0
        self._last_count_check = 0.0
        self._seen: dict[Path, tuple[int, int, float]] = {}  # dropped file -> (size, mtime, unchanged since)
        self._trained_count = 0
        self._trained_at = time.time()
        self._dispatcher: Dispatcher | None = None  # made when the first destination exists

    # -- life
    def start(self) -> None:
        models = self.settings.data_dir / "models" / "index.json"
        if models.exists():
            self._trained_count = self._count()
            self._trained_at = models.stat().st_mtime
        else:
            self._trained_at = 0.0
        drop = self.settings.drop_path
        for folder in (drop, drop / "processing", drop / "done", drop / "failed"):
            folder.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self._dispatcher is not None:
            self._dispatcher.close()

    def _loop(self) -> None:
        while not self._stop.wait(_TICK):
            for step in (self._refresh, self._retrain, self._drop, self._deliver):
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - one step's failure is logged; the schedule goes on
                    _log.warning("schedule: %s failed: %s", step.__name__.strip("_"), safe_message(exc))

    def _submit(self, kind: str, argv: list[str], origin: str) -> Job:
        job = self.service.jobs.submit(kind, [*argv, "--data-dir", str(self.settings.data_dir)], origin)
        self.service.job_worker.wake()
        return job

    def _count(self) -> int:
        with self.service.read_lock:
            return self.service.reader.log.count()

    # -- persons follow the log
    def _refresh(self) -> None:
        # every refresh_seconds, or four times as long as the last refresh took, whichever is longer: on a
        # large log under a heavy load, refreshes take at most a fifth of the time the collector shares
        every = self.settings.refresh_seconds
        if not every or time.monotonic() - self._last_refresh < max(every, 4 * self._refresh_took):
            return
        self._last_refresh = time.monotonic()
        lock = self.service.work_lock
        if lock.acquire(blocking=False):  # a job holds the work: the next tick catches up
            try:
                refresh_persons(self.service.worker)
            finally:
                lock.release()
                self._refresh_took = time.monotonic() - self._last_refresh

    # -- destinations: events and audience changes out, as they arrive
    def _deliver(self) -> None:
        lock = self.service.work_lock
        if not lock.acquire(blocking=False):  # a job holds the work: the next tick delivers
            return
        try:
            worker = self.service.worker
            if self._dispatcher is None:
                if not worker.engine.has_table("destinations"):
                    return
                self._dispatcher = Dispatcher(worker.engine, worker.cipher)
            self._dispatcher.step()
        finally:
            lock.release()

    # -- the model follows the persons
    def _retrain(self) -> None:
        events, hours = self.settings.retrain_events, self.settings.retrain_hours
        if not (events or hours) or time.monotonic() - self._last_count_check < 2.0:
            return
        self._last_count_check = time.monotonic()
        if self.service.jobs.active("train") is not None:
            return
        count = self._count()
        no_model = not (self.settings.data_dir / "models" / "index.json").exists()
        due = (
            (
                events
                and count - self._trained_count >= events
                and time.time() - self._trained_at >= self.settings.retrain_min_minutes * 60
            )
            or (hours and count > self._trained_count and time.time() - self._trained_at >= hours * 3600)
            or (no_model and count > self._trained_count and time.time() - self._trained_at >= 60)
        )
        if due:
            self._trained_count, self._trained_at = count, time.time()
            self._submit("train", ["train", "--keep-serving"], "schedule")

    # -- the drop folder
    def _drop(self) -> None:
        folder = self.settings.drop_path
        if not folder.is_dir():
            return
        now = time.monotonic()
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.name.lower().endswith(_SKIPPED_SUFFIXES):
                continue
            stat = path.stat()
            seen = self._seen.get(path)
            if seen is None or seen[:2] != (stat.st_size, stat.st_mtime_ns):
                self._seen[path] = (stat.st_size, stat.st_mtime_ns, now)
                continue
            if now - seen[2] < self.settings.drop_settle_seconds:
                continue
            del self._seen[path]
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            processing = folder / "processing" / f"{stamp}-{path.name}"
            path.rename(processing)
            command = drop_command(processing)
            if command is None:
                self._file_away(
                    processing,
                    "failed",
                    "not a kind of file the drop folder imports (events: .jsonl, "
                    ".ndjson, .json, .parquet; tills: .csv; catalogue*.csv; inventory*.csv, stock*.csv)",
                )
                continue
            self._submit(command[0], [*command, str(processing)], "drop")

    def _recover(self) -> None:
        """Files a stopped server had taken into ``processing/`` without finishing: imported again."""
        active = {a for job in self.service.jobs.list(("queued", "running"), 10_000) for a in job.argv}
        for path in sorted((self.settings.drop_path / "processing").iterdir()):
            if path.is_file() and str(path) not in active:
                command = drop_command(path)
                if command is None:
                    self._file_away(path, "failed", "not a kind of file the drop folder imports")
                else:
                    self._submit(command[0], [*command, str(path)], "drop")

    def job_finished(self, job: Job) -> None:
        """A drop-folder job ended: its file goes to done/ (with the report) or failed/ (with the reasons)."""
        if job.origin != "drop":
            return
        processing = self.settings.drop_path / "processing"
        for arg in job.argv:
            path = Path(arg)
            if path.parent == processing and path.exists():
                text = "\n".join(t for t in (job.stdout, job.stderr, job.error) if t)
                self._file_away(path, "done" if job.state == "done" else "failed", text)

    def _file_away(self, path: Path, outcome: str, text: str) -> None:
        target = self.settings.drop_path / outcome / path.name
        shutil.move(str(path), target)
        note = target.with_name(target.name + (".report.txt" if outcome == "done" else ".reasons.txt"))
        note.write_text(text.strip() + "\n")
