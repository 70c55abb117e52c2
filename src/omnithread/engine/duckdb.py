"""The embedded default: one DuckDB file in the data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from omnithread.engine.base import Engine
from omnithread.errors import OmnithreadError

__all__ = ["DuckDBEngine", "EngineError"]

_TYPES = {
    "string": "VARCHAR",
    "string[]": "VARCHAR[]",
    "timestamp": "TIMESTAMPTZ",
    "int": "INTEGER",
    "json": "JSON",
    "bytes": "BLOB",
    "double": "DOUBLE",
}


class EngineError(OmnithreadError):
    """A statement failed in the engine; carries the SQL that failed."""

    def __init__(self, sql: str, cause: Exception):
        self.sql, self.cause = sql, cause
        super().__init__(f"{cause} -- while running: {sql.strip()[:300]}")


class DuckDBEngine(Engine):
    """DuckDB over ``path`` (``:memory:`` for a throwaway database)."""

    name = "duckdb"

    def __init__(self, path: Path | str = ":memory:", threads: int | None = None):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(self.path)
        self._con.execute("SET TimeZone = 'UTC'")
        if threads:
            self._con.execute(f"SET threads = {int(threads)}")
        self.ensure_tables()

    def _column_type(self, logical: str) -> str:
        return _TYPES[logical]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self._con.execute(sql, list(params)).fetchall()
        except duckdb.Error as error:
            raise EngineError(sql, error) from error

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        try:
            relation = self._con.sql(sql, params=list(params) or None)
            return relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.Error as error:
            raise EngineError(sql, error) from error

    def append_new(self, table: str, rows: pa.Table, key: str) -> int:
        if rows.num_rows == 0:
            return 0
        self._con.register("_incoming", rows)
        try:
            columns = ", ".join(rows.column_names)
            inserted = self.query(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _incoming AS i "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.{key} = i.{key})"
            )
            return int(inserted.column(0)[0].as_py()) if inserted.num_rows else 0
        finally:
            self._con.unregister("_incoming")

    def close(self) -> None:
        self._con.close()
