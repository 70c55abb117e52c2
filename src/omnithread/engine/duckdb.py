"""The embedded default: one DuckDB file in the data directory."""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from omnithread.engine.base import Engine, names_any_sql
from omnithread.engine.tables import DERIVED_EVENT_COLUMNS, MESSAGE_KEY_SQL, identifiers_sql
from omnithread.errors import EngineError, UnavailableError, safe_message

__all__ = ["DuckDBEngine", "EngineError"]

_TYPES = {
    "string": "VARCHAR",
    "string[]": "VARCHAR[]",
    "uint64": "UBIGINT",
    "timestamp": "TIMESTAMPTZ",
    "int": "INTEGER",
    "json": "JSON",
    "bytes": "BLOB",
    "double": "DOUBLE",
}


def _vectorised(function):
    """A scalar string function applied to an Arrow batch at a time."""

    def apply(values: pa.Array) -> pa.Array:
        return pa.array([None if v is None else function(v) for v in values.to_pylist()], pa.string())

    return apply


# connections this process holds to each database file (compaction may only replace a file nobody else has open)
_OPEN: Counter[str] = Counter()
_OPEN_LOCK = threading.RLock()


def _rewrite(path: str) -> None:
    """Copy the live tables of the database at ``path`` into a new file and put it in the old one's place
    (call with no connection of this process open to it)."""
    fresh = Path(path + ".compact")
    for leftover in (fresh, Path(f"{fresh}.wal")):
        leftover.unlink(missing_ok=True)
    con = duckdb.connect(path)
    try:
        alias = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        con.execute("ATTACH ? AS _compacted", [str(fresh)])
        try:
            con.execute(f'COPY FROM DATABASE "{alias}" TO _compacted')
        finally:
            con.execute("DETACH _compacted")
    finally:
        con.close()
    Path(path + ".wal").unlink(missing_ok=True)
    os.replace(fresh, path)
    Path(path + ".compact-pending").unlink(missing_ok=True)


def _with_derived(table: str, columns: str) -> tuple[str, str]:
    """(columns to insert, what to select) for rows of ``columns``: the log's events also get the
    keyed hashes they name (see ``identifiers_sql``; unless the caller derived them) and their
    message key (``MESSAGE_KEY_SQL``), derived here as they are stored."""
    if table != "events":
        return columns, columns
    target, select = f"{columns}, message_key", f"{columns}, {MESSAGE_KEY_SQL}"
    if "identifiers" not in columns.split(", "):
        target, select = f"{target}, identifiers", f"{select}, {identifiers_sql()}"
    return target, select


def _not_stored(incoming: str, keys_from: str) -> str:
    """A condition on rows ``incoming`` of the log's shape: their message id is not in the log yet.

    Stored message keys (numbers) are matched against those of ``keys_from`` (a relation with a
    ``message_id`` column) first, so the log is read as one narrow column of numbers; ids are compared
    only for the few stored rows whose number meets one of them."""
    return (
        f"{incoming}.message_id NOT IN (SELECT e.message_id FROM events AS e WHERE e.message_key IN "
        f"(SELECT {MESSAGE_KEY_SQL} FROM {keys_from}))"
    )


def _unavailable(path: str, error: Exception) -> UnavailableError:
    """Why a database file cannot be opened, in one sentence that says what to do."""
    text = str(error)
    holder = re.search(r"\(PID (\d+)\)", text)
    if "lock" in text.lower():
        who = f"another process (PID {holder.group(1)})" if holder else "another process"
        return UnavailableError(
            f"{who} holds the data directory of {path}: stop it, or, if it is `omnithread "
            "serve`, send data through its collector and read through its API"
        )
    if "Permission denied" in text or "read-only" in text.lower():
        return UnavailableError(
            f"{path} cannot be opened for writing (permission denied): omnithread needs to "
            "write to its data directory; give this user write access or copy the directory"
        )
    return UnavailableError(f"{path} cannot be opened: {safe_message(error)}")


class DuckDBEngine(Engine):
    """DuckDB over ``path`` (``:memory:`` for a throwaway database)."""

    name = "duckdb"

    def __init__(self, path: Path | str = ":memory:", threads: int | None = None, memory_limit: str | None = None):
        self.path = str(path)
        self.threads, self.memory_limit = threads, memory_limit
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with _OPEN_LOCK:
                if not _OPEN[self._key] and self._pending.exists():  # a rewrite a stopped process owed
                    _rewrite(self.path)
        self._connect()
        self.ensure_tables()

    @property
    def _key(self) -> str:
        return os.path.realpath(self.path)

    @property
    def _pending(self) -> Path:
        return Path(self.path + ".compact-pending")

    def _connect(self) -> None:
        with _OPEN_LOCK:
            self._connect_unlocked()

    def _connect_unlocked(self) -> None:
        """Open this engine's connection (the caller holds ``_OPEN_LOCK``)."""
        try:
            self._con = duckdb.connect(self.path)
        except duckdb.Error as error:
            raise _unavailable(self.path, error) from None
        if self.path != ":memory:":
            _OPEN[self._key] += 1
        self._functions: set[str] = set()
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute("SET enable_progress_bar = false")  # it prints to standard output: a --json answer's
        if self.threads:
            self._con.execute(f"SET threads = {int(self.threads)}")
        if self.memory_limit:
            self._con.execute("SET memory_limit = ?", [self.memory_limit])

    def verify(self) -> None:
        """Read every stored value of every table once, on a connection of its own (so writes go on); the
        engine checks each block as it reads it, so a damaged file raises :class:`EngineError` here."""
        if self.path == ":memory:":
            return
        con = self._con.cursor()
        try:
            tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()
            for (table,) in tables:
                sql = f'SELECT count(hash(t)) FROM "{table}" AS t'
                try:
                    con.execute(sql).fetchall()
                except duckdb.Error as error:
                    raise EngineError(sql, error) from error
        finally:
            con.close()

    def compact(self) -> bool:
        """Rewrite the database file with only what its tables hold now; True when done now.

        Deleting rows frees their blocks, but the bytes stay in the file until the blocks are reused;
        after an erasure that is personal data nobody can reach through a table yet anyone with the
        file can read. The live tables are copied into a new file, which then replaces the old one in
        one rename (a crash before it leaves the old file whole). Only the last connection of this process
        to the file may do that: another one's later commits would go to the replaced file and be lost.
        So while others are open (a server's collector, reads and jobs) the rewrite is owed instead
        (``<file>.compact-pending``) and done as the last of them closes, or as the file is next opened
        after a crash; False then."""
        if self.path == ":memory:":
            return True
        with _OPEN_LOCK:
            self._pending.touch()
            if _OPEN[self._key] > 1:
                return False
            self._con.close()
            _OPEN[self._key] -= 1
            try:
                _rewrite(self.path)
            finally:
                self._connect_unlocked()
        return True

    def ensure_tables(self) -> None:
        """Create missing tables; a log stored before events carried their identifiers or message keys gets
        them now, once."""
        super().ensure_tables()
        # identity resolution's node table is temporary: one stored by earlier versions goes (it held hashes)
        for (database,) in self._con.execute(
            "SELECT database_name FROM duckdb_tables() WHERE table_name = 'identity_nodes' AND NOT temporary"
        ).fetchall():
            self.execute(f'DROP TABLE "{database}".main.identity_nodes')
        present = {
            r["column_name"]
            for r in self.rows("SELECT column_name FROM information_schema.columns WHERE table_name = 'events'")
        }
        # each derived column's value, and which rows get one (most events name no identifier)
        fills = {
            "identifiers": (identifiers_sql(), f"{identifiers_sql()} IS NOT NULL"),
            "message_key": (MESSAGE_KEY_SQL, "true"),
        }
        for name, logical, _ in DERIVED_EVENT_COLUMNS:
            if name not in present:
                value, where = fills[name]
                self.execute(f"ALTER TABLE events ADD COLUMN {name} {_TYPES[logical]}")
                self.execute(f"UPDATE events SET {name} = {value} WHERE {where}")

    def _column_type(self, logical: str) -> str:
        return _TYPES[logical]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self._con.execute(self.translate(sql), list(params)).fetchall()
        except duckdb.Error as error:
            raise EngineError(sql, error) from error

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        try:
            relation = self._con.sql(self.translate(sql), params=list(params) or None)
            return relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.Error as error:
            raise EngineError(sql, error) from error

    def append_new(self, table: str, rows: pa.Table, key: str) -> int:
        if rows.num_rows == 0:
            return 0
        self._con.register("_incoming", rows)
        try:
            target, select = _with_derived(table, ", ".join(rows.column_names))
            new = (
                _not_stored("i", "_incoming")
                if (table, key) == ("events", "message_id")
                else f"NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.{key} = i.{key})"
            )
            return self._insert(f"INSERT INTO {table} ({target}) SELECT {select} FROM _incoming AS i WHERE {new}")
        finally:
            self._con.unregister("_incoming")

    def insert_rows(self, table: str, rows: pa.Table) -> int:
        """Insert every row (the caller has made sure none is there yet)."""
        if rows.num_rows == 0:
            return 0
        self._con.register("_incoming", rows)
        try:
            target, select = _with_derived(table, ", ".join(rows.column_names))
            return self._insert(f"INSERT INTO {table} ({target}) SELECT {select} FROM _incoming")
        finally:
            self._con.unregister("_incoming")

    def refuse_staged(self, values) -> int:
        """Drop staged fast-path rows that name any of ``values`` (as an id, or inside their JSON);
        returns how many were dropped."""
        before = self.scalar("SELECT count(*) FROM _staged")
        self._con.register("_refused_values", pa.table({"v": pa.array(sorted(values), pa.string())}))
        try:
            self.execute(f"DELETE FROM _staged WHERE {names_any_sql('_staged', '_refused_values')}")
        finally:
            self._con.unregister("_refused_values")
        return before - self.scalar("SELECT count(*) FROM _staged")

    def _insert(self, sql: str) -> int:
        """Run an INSERT and return how many rows it stored (fetched as a plain row: an Arrow result
        costs a millisecond more, much of a small write's time)."""
        try:
            inserted = self._con.execute(sql).fetchall()
        except duckdb.Error as error:
            raise EngineError(sql, error) from error
        return int(inserted[0][0]) if inserted else 0

    @property
    def has_fast_path(self) -> bool:
        return True

    def _register_functions(self, functions: dict) -> None:
        for name, function in functions.items():
            if name in self._functions:
                continue

            self._con.create_function(  # type: ignore[call-overload]  # (the stubs lack the arrow form)
                name,
                _vectorised(function),
                [duckdb.sqltype("VARCHAR")],
                duckdb.sqltype("VARCHAR"),
                type="arrow",
                null_handling="special",
                side_effects=False,
            )
            self._functions.add(name)

    def stage_events_fast(
        self, chunk: pa.Table, select_sql: str, params: dict, functions: dict | None = None
    ) -> list[int]:
        self._register_functions(functions or {})
        self._con.register("_chunk", chunk)
        try:
            try:
                self._con.execute(f"CREATE OR REPLACE TEMP TABLE _staged AS {select_sql}", params).fetchall()
            except duckdb.Error as error:
                raise EngineError(select_sql, error) from error
            rest = self._con.execute(
                "SELECT line_no FROM _chunk WHERE line_no NOT IN (SELECT line_no FROM _staged) ORDER BY line_no"
            ).fetchall()
            return [r[0] for r in rest]
        finally:
            self._con.unregister("_chunk")

    def commit_staged_events(self, others: pa.Table) -> tuple[int, int]:
        self._con.register("_others", others)
        try:
            target, select = _with_derived("events", ", ".join(c for c in others.column_names if c != "line_no"))
            # The rows to skip, found on two narrow columns: those whose message id an earlier line of this
            # chunk holds or the log holds (read once for both parts); then each part goes in whole (a union
            # of the wide rows, deduplicated as one, cost half again). A row is its line and message id: a
            # line holding a batch makes several rows, each with its own id.
            self._con.execute(
                "CREATE OR REPLACE TEMP TABLE _skip AS WITH incoming AS (SELECT line_no, message_id FROM _staged "
                "UNION ALL SELECT line_no, message_id FROM _others) "
                "SELECT line_no, message_id FROM incoming "
                "QUALIFY row_number() OVER (PARTITION BY message_id ORDER BY line_no) > 1 "
                f"UNION ALL SELECT line_no, message_id FROM incoming AS i WHERE NOT {_not_stored('i', 'incoming')}"
            ).fetchall()
            offered = self._con.execute("SELECT count(*) FROM _staged").fetchall()[0][0] + others.num_rows
            stored = 0
            self._con.execute("BEGIN TRANSACTION")
            try:
                for part in ("_staged", "_others"):
                    stored += self._insert(
                        f"INSERT INTO events ({target}) SELECT {select} FROM {part} AS i WHERE NOT EXISTS "
                        "(SELECT 1 FROM _skip AS s WHERE s.line_no = i.line_no AND s.message_id = i.message_id)"
                    )
                self._con.execute("COMMIT").fetchall()
            except BaseException:
                self._con.execute("ROLLBACK").fetchall()
                raise
            return stored, offered
        finally:
            self._con.unregister("_others")
            self._con.execute("DROP TABLE IF EXISTS _staged").fetchall()
            self._con.execute("DROP TABLE IF EXISTS _skip").fetchall()

    def _begin(self) -> None:
        self.execute("BEGIN TRANSACTION")

    def _commit(self) -> None:
        self.execute("COMMIT")

    def _rollback(self) -> None:
        self.execute("ROLLBACK")

    def register(self, name: str, table: pa.Table) -> None:
        self._con.register(name, table)

    def unregister(self, name: str) -> None:
        self._con.unregister(name)

    def close(self) -> None:
        self._con.close()
        if self.path == ":memory:":
            return
        with _OPEN_LOCK:
            _OPEN[self._key] -= 1
            if not _OPEN[self._key] and self._pending.exists():  # the last one: the rewrite owed is done now
                _rewrite(self.path)
