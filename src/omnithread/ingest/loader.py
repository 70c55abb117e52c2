"""The loader: moves what collectors appended to the broker into the log, each entry exactly once.

It reads entries after the position the log records for the stream, decodes each (an entry that is not one
of ours is kept as a rejection with its reason, encrypted, and loading goes on), and hands a group of them
to ``store`` with the position of the group's last entry; ``store`` writes the rows and the position in one
transaction. So a loader killed before that commit reads the same entries again (and the log's message
ids keep a message that came twice, by two entries, once), and a loader killed after it starts past them.
Entries are trimmed from the broker only after their commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from omnithread.engine.tables import EventRow, RejectedRow
from omnithread.errors import OmnithreadError, Problem, safe_message
from omnithread.ingest.broker import START, Broker, decode_entry

__all__ = ["Loader", "LoadedGroup"]

_log = logging.getLogger("omnithread.loader")


@dataclass
class LoadedGroup:
    """What one pass moved: entries read, event rows offered, rejections kept (bad entries among them)."""

    entries: int = 0
    rows: int = 0
    rejected: int = 0
    bad_entries: int = 0


class Loader:
    """Moves a broker's entries into the log. ``position()`` reads the log's recorded position of the stream;
    ``store(rows, rejected, position)`` writes rows and position in one transaction; ``refuse(entry, source,
    problem)`` makes a rejection of an entry that cannot be read."""

    def __init__(
        self,
        broker: Broker,
        position: Callable[[], str | None],
        store: Callable[[list[EventRow], list[RejectedRow], str], None],
        refuse: Callable[[bytes, str, Problem], RejectedRow],
        entries_per_group: int = 500,
        block_seconds: float = 0.5,
    ):
        self.broker = broker
        self._position = position
        self._store = store
        self._refuse = refuse
        self.entries_per_group = entries_per_group
        self.block_seconds = block_seconds
        self.position: str | None = None
        self.loaded = LoadedGroup()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load_once(self, block_seconds: float = 0.0) -> LoadedGroup:
        """Move one group of entries (up to ``entries_per_group``), waiting up to ``block_seconds`` for one."""
        if self.position is None:
            self.position = self._position() or START
        entries = self.broker.read_after(self.position, self.entries_per_group, block_seconds)
        group = LoadedGroup(entries=len(entries))
        if not entries:
            return group
        rows: list[EventRow] = []
        rejected: list[RejectedRow] = []
        for entry_id, entry in entries:
            try:
                entry_rows, entry_rejected = decode_entry(entry)
            except ValueError as exc:
                source = f"broker:{self.broker.name}:{entry_id}"
                rejected.append(self._refuse(entry, source, Problem("bad_broker_entry", "entry", entry_id, str(exc))))
                group.bad_entries += 1
                continue
            rows.extend(entry_rows)
            rejected.extend(entry_rejected)
        last = entries[-1][0]
        self._store(rows, rejected, last)
        self.position = last
        group.rows, group.rejected = len(rows), len(rejected)
        self.loaded.entries += group.entries
        self.loaded.rows += group.rows
        self.loaded.rejected += group.rejected
        self.loaded.bad_entries += group.bad_entries
        try:
            self.broker.trim(last)
        except OmnithreadError as exc:  # trimmed at the next group: what is stored is never read again
            _log.warning("the broker was not trimmed: %s", safe_message(exc))
        return group

    def drain(self) -> LoadedGroup:
        """Move every entry there is now."""
        total = LoadedGroup()
        while True:
            group = self.load_once()
            if not group.entries:
                return total
            for name in ("entries", "rows", "rejected", "bad_entries"):
                setattr(total, name, getattr(total, name) + getattr(group, name))

    def start(self) -> None:
        """Load in a thread of its own until :meth:`stop`; a failing broker or log is retried, with backoff."""
        self._thread = threading.Thread(target=self._run, name="broker-loader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            try:
                self.load_once(self.block_seconds)
                self.last_error, pause = None, 0.1
            except Exception as exc:  # noqa: BLE001 - the loader outlives a broker or disk that fails for a while
                self.last_error = safe_message(exc) if isinstance(exc, OmnithreadError) else type(exc).__name__
                self.position = None  # read from the log again: what committed is what counts
                _log.warning("loading from the broker failed (retrying in %.1f s): %s", pause, self.last_error)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict:
        """Where the loader is: entries waiting, entries and rows moved since the start, the last failure."""
        try:
            backlog: int | None = self.backlog()
        except OmnithreadError:
            backlog = None
        return {
            "broker": self.broker.name,
            "backlog": backlog,
            "loaded_entries": self.loaded.entries,
            "loaded_events": self.loaded.rows,
            "bad_entries": self.loaded.bad_entries,
            "last_error": self.last_error,
        }

    def backlog(self) -> int:
        """Entries in the broker not yet in the log."""
        return self.broker.backlog(self.position or self._position() or START)


def wait_until_loaded(loader: Loader, timeout: float) -> bool:
    """Whether the broker's backlog reached zero within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if loader.backlog() == 0:
            return True
        time.sleep(0.05)
    return False
