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


def _vectorised(function):
    """A scalar string function applied to an Arrow batch at a time."""

    def apply(values: pa.Array) -> pa.Array:
        return pa.array([None if v is None else function(v) for v in values.to_pylist()], pa.string())

    return apply


class DuckDBEngine(Engine):
    """DuckDB over ``path`` (``:memory:`` for a throwaway database)."""

    name = "duckdb"

    def __init__(self, path: Path | str = ":memory:", threads: int | None = None):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(self.path)
        self._functions: set[str] = set()
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

    @property
    def has_fast_path(self) -> bool:
        return True

    def _register_functions(self, functions: dict) -> None:
        for name, function in functions.items():
            if name in self._functions:
                continue

            self._con.create_function(name, _vectorised(function), [duckdb.sqltype("VARCHAR")], duckdb.sqltype("VARCHAR"),
                                      type="arrow", side_effects=False)
            self._functions.add(name)

    def append_events_fast(
        self, chunk: pa.Table, select_sql: str, params: dict, functions: dict | None = None
    ) -> tuple[int, int, list[int]]:
        self._register_functions(functions or {})
        self._con.register("_chunk", chunk)
        try:
            try:
                self._con.execute(f"CREATE OR REPLACE TEMP TABLE _staged AS {select_sql}", params).fetchall()
            except duckdb.Error as error:
                raise EngineError(select_sql, error) from error
            columns = ", ".join(
                name for (name,) in self._con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = '_staged' ORDER BY column_index"
                ).fetchall() if name != "line_no"
            )
            inserted = self.query(
                f"INSERT INTO events ({columns}) SELECT {columns} FROM ("
                f"SELECT * FROM _staged QUALIFY row_number() OVER (PARTITION BY message_id ORDER BY line_no) = 1) AS i "
                f"WHERE NOT EXISTS (SELECT 1 FROM events AS e WHERE e.message_id = i.message_id)"
            )
            stored = int(inserted.column(0)[0].as_py()) if inserted.num_rows else 0
            vouched = self._con.execute("SELECT count(*) FROM _staged").fetchone()[0]
            rest = self._con.execute(
                "SELECT line_no FROM _chunk WHERE line_no NOT IN (SELECT line_no FROM _staged) ORDER BY line_no"
            ).fetchall()
            return stored, vouched, [r[0] for r in rest]
        finally:
            self._con.unregister("_chunk")
            self._con.execute("DROP TABLE IF EXISTS _staged").fetchall()

    def register(self, name: str, table: pa.Table) -> None:
        self._con.register(name, table)

    def unregister(self, name: str) -> None:
        self._con.unregister(name)

    def close(self) -> None:
        self._con.close()
