"""The narrow interface every stage uses to reach its tables.

An engine holds named tables and runs set-based SQL over them. Stages never
import a concrete engine: the edges open one with :func:`omnithread.engine.open_engine`
from the settings, so choosing another engine is configuration, not a rewrite.
A new engine implements the four hooks below; the rest is shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa

from omnithread.engine.tables import TABLES

__all__ = ["Engine", "SQL_DIALECT"]


@lru_cache(maxsize=4096)
def _translated(sql: str, dialect: str) -> str:
    import sqlglot  # deferred: only an engine that speaks another dialect needs the translator

    return ";\n".join(sqlglot.transpile(sql, read=SQL_DIALECT, write=dialect))


def string_list_sql(values: Iterable[str]) -> str:
    """A SQL list literal of ``values`` (quotes doubled), typed ``VARCHAR[]`` even when empty."""
    return "[" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + "]::VARCHAR[]"


def names_any_sql(row: str, values: str) -> str:
    """A condition: event row ``row`` names one of the strings in column ``v`` of relation ``values``,
    as its user or anonymous id, or inside its JSON (values of at least 8 characters, so that short
    ones cannot match by chance). The SQL twin of ``omnithread.privacy.suppression.refused_by_suppression``."""
    return f"""({row}.user_id IN (SELECT v FROM {values}) OR {row}.anonymous_id IN (SELECT v FROM {values})
        OR EXISTS (SELECT 1 FROM {values} x WHERE length(x.v) >= 8 AND (
            contains(coalesce(CAST({row}.properties AS VARCHAR), ''), x.v)
            OR contains(coalesce(CAST({row}.traits AS VARCHAR), ''), x.v)
            OR contains(coalesce(CAST({row}.context AS VARCHAR), ''), x.v))))"""


# The one dialect the stages write their statements in. An engine that speaks another translates each
# statement as it runs it (``Engine.translate``, with sqlglot), the way Splink runs one SQL text on DuckDB and
# Spark; DuckDB runs them as they are.
SQL_DIALECT = "duckdb"


class Engine(ABC):
    """Tables and SQL in one place. Use as a context manager to close it."""

    name = "abstract"
    dialect = SQL_DIALECT  # the SQL dialect the engine runs (sqlglot's name for it)

    def translate(self, sql: str) -> str:
        """``sql``, written in :data:`SQL_DIALECT`, as this engine's dialect writes it."""
        if self.dialect == SQL_DIALECT:
            return sql
        return _translated(sql, self.dialect)

    # -- hooks each engine provides -------------------------------------------------
    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement that returns nothing."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """Run a query and return its result as an Arrow table."""

    @abstractmethod
    def append_new(self, table: str, rows: pa.Table, key: str) -> int:
        """Append the rows whose ``key`` is not yet in ``table``; return how many."""

    def stage_events_fast(
        self, chunk: pa.Table, select_sql: str, params: dict, functions: dict | None = None
    ) -> list[int]:
        """Run a fast-path statement over ``chunk``, holding the rows it vouches for.

        Returns the line numbers it leaves to the caller, who then calls
        :meth:`commit_staged_events` with the rows it made of them. ``functions``
        maps names of scalar string functions the statement calls to Python callables.
        """
        raise NotImplementedError(f"the {self.name} engine has no fast path")

    def commit_staged_events(self, others: pa.Table) -> tuple[int, int]:
        """Store the held rows and ``others`` (both with ``line_no``): per message id the row of the
        earliest line, and only ids the log lacks. Returns (stored, offered)."""
        raise NotImplementedError(f"the {self.name} engine has no fast path")

    @property
    def has_fast_path(self) -> bool:
        return False

    has_transactions = True  # whether a transaction block is all or nothing (an erasure needs it)
    distributed = False  # whether its work runs beyond this process (set-based work then stays on it)

    @abstractmethod
    def insert_rows(self, table: str, rows: pa.Table) -> int:
        """Insert every row (the caller has made sure none is there yet)."""
        raise NotImplementedError

    def refuse_staged(self, values) -> int:
        """Drop staged fast-path rows naming any of ``values``; returns how many (engines with a fast path)."""
        raise NotImplementedError

    @abstractmethod
    def register(self, name: str, table: pa.Table) -> None:
        """Make an Arrow table readable by name in SQL until unregistered."""

    @abstractmethod
    def unregister(self, name: str) -> None:
        """Forget a registered table."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine's resources."""

    @abstractmethod
    def _column_type(self, logical: str) -> str:
        """The engine's SQL type for a logical column type."""

    def verify(self) -> None:  # noqa: B027 - an optional hook: engines without files of their own do nothing
        """Read everything stored once, raising on damage the engine detects (engines with files of their own)."""

    def compact(self) -> bool:
        """Give the space of deleted rows back so their bytes no longer lie in the engine's files (engines
        that keep files of their own); False when it is owed instead, to be done as soon as it safely can."""
        return True

    def _begin(self) -> None:
        """Start a transaction (engines that have them)."""
        raise NotImplementedError(f"the {self.name} engine has no transactions")

    def _commit(self) -> None:
        raise NotImplementedError(f"the {self.name} engine has no transactions")

    def _rollback(self) -> None:
        raise NotImplementedError(f"the {self.name} engine has no transactions")

    # -- shared template methods ----------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator["Engine"]:
        """All or nothing: every statement run inside commits together, or none does when the block raises.
        Nested blocks join the outer one."""
        if getattr(self, "_in_transaction", False):
            yield self
            return
        self._begin()
        self._in_transaction = True
        try:
            yield self
        except BaseException:
            self._in_transaction = False
            self._rollback()
            raise
        self._in_transaction = False
        self._commit()

    def ensure_tables(self) -> None:
        """Create every table omnithread needs, if it is missing."""
        for table, columns in TABLES.items():
            body = ", ".join(
                f"{name} {self._column_type(kind)}{'' if nullable else ' NOT NULL'}" for name, kind, nullable in columns
            )
            self.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a query and return its rows as dicts."""
        return self.query(sql, params).to_pylist()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        result = self.query(sql, params)
        return result.column(0)[0].as_py() if result.num_rows else None

    def delete_where(self, table: str, where: str, params: Sequence[Any] = ()) -> int:
        """Delete the rows of ``table`` (if it exists) that match ``where``; returns how many."""
        if not self.has_table(table):
            return 0
        n = self.scalar(f"SELECT count(*) FROM {table} WHERE {where}", params)
        if n:
            self.execute(f"DELETE FROM {table} WHERE {where}", params)
        return n

    def has_table(self, name: str) -> bool:
        """Whether a table (or view) of this name exists."""
        return bool(self.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]))

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
