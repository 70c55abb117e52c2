"""Apache Spark as the engine: tables as Parquet folders, the stages' SQL translated, run by Spark SQL.

Chosen with ``OMNITHREAD_ENGINE=spark`` (or ``--engine spark``). Spark runs in local mode unless
``OMNITHREAD_SPARK_MASTER`` names a cluster (``spark://host:7077``, ``yarn``, ``k8s://...``). Each table is a
folder of Parquet files under ``<data_dir>/spark/<table>``, a layout any Parquet reader reads (DuckDB's
``read_parquet`` included); no Delta or Iceberg, so nothing is fetched at run time.

Statements are written once, in DuckDB's dialect, and translated (``Engine.translate``, sqlglot). Queries run
as Spark SQL. Plain Parquet tables have no ``DELETE`` or ``UPDATE``, so the engine carries out each change
itself, set-based: a delete writes the table again without the rows, an update writes it again with the new
values (joined rows of an ``UPDATE ... FROM`` first), into a new folder that then replaces the old one
(a rename). Temporary tables are folders of this engine's own, read as views of its session. There are no
transactions: a block of statements is not all-or-nothing here (DuckDB's is).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import sqlglot
from sqlglot import exp

from omnithread.engine.base import SQL_DIALECT, Engine
from omnithread.engine.tables import MESSAGE_KEY_SQL
from omnithread.errors import EngineError

__all__ = ["SparkEngine", "spark_session"]

_TYPES = {
    "string": "STRING",
    "string[]": "ARRAY<STRING>",
    "uint64": "DECIMAL(20,0)",
    "timestamp": "TIMESTAMP",
    "int": "INT",
    "json": "STRING",
    "bytes": "BINARY",
    "double": "DOUBLE",
}

# DuckDB functions Spark lacks, as Spark SQL (arguments substituted in order): set-based, no Python
_MD5_LOWER = " + ".join(
    f"CAST(conv(substr(md5({{0}}), {17 + 2 * i}, 2), 16, 10) AS DECIMAL(20,0)) * CAST({256**i} AS DECIMAL(20,0))"
    for i in range(8)
)
_FUNCTIONS = {
    "md5_number_lower": f"CAST(({_MD5_LOWER}) AS DECIMAL(20,0))",
    "regexp_full_match": "({0} RLIKE concat('^(?:', {1}, ')$'))",
    "to_seconds": "make_dt_interval(0, 0, 0, {0})",
}

_LOCK = threading.Lock()
_SESSION: Any = None


def _submitted() -> bool:
    """Whether this process is a driver that ``spark-submit`` started (its JVM and its settings are given)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_session(master: str | None = None):
    """This process's Spark session (one per JVM), made at the first call.

    Run by ``spark-submit``, the master and every setting given there (``--master``, ``--conf``) are kept:
    omnithread's defaults fill only what was not given. Otherwise the master is ``master``, else
    ``OMNITHREAD_SPARK_MASTER``, else ``local[*]``."""
    global _SESSION
    with _LOCK:
        if _SESSION is None:
            from pyspark import SparkConf, SparkContext
            from pyspark.sql import SparkSession

            quiet = f"-Dlog4j.configurationFile={Path(__file__).with_name('spark-log4j2.properties')}"
            defaults = {
                "spark.app.name": "omnithread",
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",  # it would print into --json answers
                "spark.sql.session.timeZone": "UTC",  # required: the stages' times are UTC
                "spark.sql.ansi.enabled": "false",  # required: a division by zero is NULL, as in DuckDB
                "spark.sql.shuffle.partitions": os.environ.get("OMNITHREAD_SPARK_PARTITIONS", "8"),
                "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
                "spark.driver.memory": os.environ.get("OMNITHREAD_SPARK_DRIVER_MEMORY", "4g"),
                "spark.driver.extraJavaOptions": quiet,
            }
            required = {"spark.sql.session.timeZone", "spark.sql.ansi.enabled"}
            builder = SparkSession.builder
            if _submitted() and master is None:
                SparkContext._ensure_initialized()  # the JVM spark-submit started, with its settings
                given = SparkConf()
                for key, value in defaults.items():
                    if key in required or not given.contains(key):
                        builder = builder.config(key, value)
            else:
                master = master or os.environ.get("OMNITHREAD_SPARK_MASTER") or "local[*]"
                # Python workers (the string UDFs) run this interpreter, with its packages, unless told otherwise
                os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
                if master.startswith("local"):
                    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # this machine only, and no warning
                builder = builder.master(master)
                for key, value in defaults.items():
                    builder = builder.config(key, value)
            _SESSION = builder.getOrCreate()
            _SESSION.sparkContext.setLogLevel("OFF")  # errors come back as exceptions
            logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
        return _SESSION


class SparkEngine(Engine):
    """Spark over the Parquet tables of a data directory (``path`` is the data directory's database path:
    the tables live in ``spark/`` beside it)."""

    name = "spark"
    dialect = "spark"
    has_transactions = False
    distributed = True

    def __init__(self, path: Path | str, memory_limit: str | None = None):
        self.root = Path(path).parent / "spark"
        self.root.mkdir(parents=True, exist_ok=True)
        self.spark = spark_session().newSession()  # views and functions of its own; the files are shared
        self._temp_root = self.root / "_temp" / uuid.uuid4().hex
        self._temp: set[str] = set()
        self._seen: dict[str, tuple[int, int]] = {}  # table -> the folder (inode, mtime) its view reads
        self._registered: set[str] = set()
        self._string_functions()
        self.ensure_tables()

    def _string_functions(self) -> None:
        """DuckDB's Jaro-Winkler and Damerau-Levenshtein, which the matcher's comparisons use, as vectorised
        Python UDFs (``spark_udfs``, shipped to executors by value; no JAR)."""
        try:
            from pyspark import cloudpickle
            from pyspark.sql.functions import pandas_udf

            from omnithread.engine import spark_udfs
        except ImportError:  # pandas or rapidfuzz missing: the matcher works in the driver's scratch engine
            self.distributed = False
            return
        cloudpickle.register_pickle_by_value(spark_udfs)
        self.spark.udf.register("jarowinkler_similarity", pandas_udf(spark_udfs.jaro_winkler, "double"))  # type: ignore[call-overload]
        self.spark.udf.register("damerau_levenshtein", pandas_udf(spark_udfs.damerau_levenshtein, "bigint"))  # type: ignore[call-overload]

    # -- tables as folders ----------------------------------------------------------
    def _folder(self, name: str) -> Path:
        return (self._temp_root if name in self._temp else self.root) / name

    def _tables(self) -> set[str]:
        found = {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
        return found | self._temp

    def _view(self, name: str) -> None:
        """(Re)make the view of table ``name`` when its folder changed since this engine last read it."""
        folder = self._folder(name)
        try:
            stat = folder.stat()
        except FileNotFoundError:
            return
        mark = (stat.st_ino, stat.st_mtime_ns)
        if self._seen.get(name) == mark:
            return
        self.spark.read.parquet(str(folder)).createOrReplaceTempView(name)
        self._seen[name] = mark

    def _views_for(self, tree: Any) -> None:
        tables = self._tables()
        for table in tree.find_all(exp.Table):
            if table.name in tables:
                self._view(table.name)

    def _write(self, name: str, frame, mode: str = "replace") -> None:
        """Write ``frame`` as table ``name``: ``replace`` (a new folder renamed over the old) or ``append``."""
        folder = self._folder(name)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if mode == "append" and folder.exists():
            frame.write.mode("append").parquet(str(folder))
            os.utime(folder)  # the folder's views read it again
        else:
            fresh = folder.with_name(f".{name}.{uuid.uuid4().hex}")
            frame.write.mode("overwrite").parquet(str(fresh))
            old = folder.with_name(f".{name}.old.{uuid.uuid4().hex}")
            if folder.exists():
                folder.rename(old)
            fresh.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        self._seen.pop(name, None)
        self._view(name)

    def _drop(self, name: str) -> None:
        shutil.rmtree(self._folder(name), ignore_errors=True)
        self._temp.discard(name)
        self._seen.pop(name, None)
        self.spark.catalog.dropTempView(name)

    # -- hooks ---------------------------------------------------------------------
    def _column_type(self, logical: str) -> str:
        return _TYPES[logical]

    def translate(self, sql: str) -> str:
        return self._spark_sql(sqlglot.parse_one(sql, read=SQL_DIALECT))

    def _spark_sql(self, tree: Any) -> str:
        sql = tree.transform(_spark_functions).sql(dialect="spark")
        sql = sql.replace("'ARRAY<JSON>'", "'ARRAY<STRING>'")  # JSON values are their text here
        if "_w" not in sql:
            return sql
        # sqlglot moves a QUALIFY into a subquery that adds its window as column _w; a SELECT * around it would
        # pass _w on (and two of them nested would clash): the star leaves it out
        return _parse_spark(sql).transform(_without_window_column).sql(dialect="spark")

    def _frame(self, tree: Any, params: Sequence[Any]):
        self._views_for(tree)
        sql = self._spark_sql(tree)
        try:
            return self.spark.sql(sql, args=list(params) or None)
        except Exception as error:  # noqa: BLE001 - Spark's errors come from the JVM as several types
            raise EngineError(sql, error) from error

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            statements = sqlglot.parse(_inline(sql, params), read=SQL_DIALECT)
        except sqlglot.errors.ParseError as error:
            raise EngineError(sql, error) from error
        for tree in statements:
            if tree is not None:
                self._run(tree, (), sql)

    def _run(self, tree: Any, params: Sequence[Any], sql: str) -> None:
        try:
            if isinstance(tree, exp.Create):
                self._create(tree, params)
            elif isinstance(tree, exp.Insert):
                self._insert(tree, params)
            elif isinstance(tree, exp.Delete):
                self._delete(tree, params)
            elif isinstance(tree, exp.Update):
                self._update(tree, params)
            elif isinstance(tree, exp.Drop):
                if (tree.args.get("kind") or "").upper() in ("TABLE", "VIEW"):
                    for table in tree.args.get("tables") or [tree.this]:
                        self._drop(table.name)
            elif isinstance(tree, exp.Alter):
                self._alter(tree)
            elif isinstance(tree, (exp.Transaction, exp.Commit, exp.Rollback)):
                return  # no transactions here (see the module's note)
            else:
                self._frame(tree, params).collect()
        except EngineError:
            raise
        except Exception as error:  # noqa: BLE001
            raise EngineError(sql, error) from error

    def _create(self, tree: exp.Create, params: Sequence[Any]) -> None:
        kind = (tree.args.get("kind") or "").upper()
        if kind == "INDEX":
            return  # Spark reads Parquet by its own statistics; no indexes
        if kind == "VIEW":
            self._frame(tree.expression, params).createOrReplaceTempView(tree.this.name)
            return
        schema = tree.this
        name = schema.this.name if isinstance(schema, exp.Schema) else schema.name
        temporary = any(
            isinstance(p, exp.TemporaryProperty) for p in (tree.args.get("properties") or exp.Properties()).expressions
        )
        exists = name in self._tables()
        if tree.args.get("exists") and exists:
            return
        if temporary:
            self._temp.add(name)
        if tree.expression is not None:  # CREATE [OR REPLACE] TABLE ... AS SELECT
            self._write(name, self._frame(tree.expression, params))
            return
        columns = [c for c in schema.expressions if isinstance(c, exp.ColumnDef)]
        ddl = ", ".join(f"`{c.name}` {self._spark_type(c.args['kind'])}" for c in columns)
        self._write(name, self.spark.createDataFrame([], ddl))
        keys = [
            c.name for c in columns if any(isinstance(k.kind, exp.PrimaryKeyColumnConstraint) for k in c.constraints)
        ]
        defaults = {
            c.name: k.kind.this.sql(dialect=SQL_DIALECT)
            for c in columns
            for k in c.constraints
            if isinstance(k.kind, exp.DefaultColumnConstraint)
        }
        (self._folder(name) / "_omnithread.json").write_text(json.dumps({"key": keys, "defaults": defaults}))

    def _spark_type(self, kind: exp.DataType) -> str:
        return exp.DataType.build(kind.sql(dialect=SQL_DIALECT), dialect=SQL_DIALECT).sql(dialect="spark")

    def _meta(self, name: str) -> dict:
        path = self._folder(name) / "_omnithread.json"
        return json.loads(path.read_text()) if path.exists() else {"key": [], "defaults": {}}

    def _schema(self, name: str):
        self._view(name)
        return self.spark.table(name).schema

    def _insert(self, tree: exp.Insert, params: Sequence[Any]) -> None:
        target = tree.this
        name = target.this.name if isinstance(target, exp.Schema) else target.name
        given = [c.name for c in target.expressions] if isinstance(target, exp.Schema) else None
        source = tree.expression
        if isinstance(source, exp.Values):
            source = exp.select("*").from_(
                exp.Subquery(this=source, alias=exp.TableAlias(this=exp.to_identifier("_v")))
            )
        incoming = self._frame(source, params)
        schema = self._schema(name)
        meta = self._meta(name)
        names = given or [f.name for f in schema.fields][: len(incoming.columns)]
        incoming = incoming.toDF(*names)
        from pyspark.sql import functions as F

        columns = []
        for field in schema.fields:
            if field.name in names:
                columns.append(F.col(field.name).cast(field.dataType).alias(field.name))
            elif field.name in meta["defaults"]:
                default = self.translate("SELECT " + meta["defaults"][field.name])[len("SELECT ") :]
                columns.append(F.expr(default).cast(field.dataType).alias(field.name))
            else:
                columns.append(F.lit(None).cast(field.dataType).alias(field.name))
        incoming = incoming.select(*columns)
        conflict = tree.args.get("conflict")
        if conflict is not None and meta["key"]:
            incoming = incoming.dropDuplicates(meta["key"]).join(self.spark.table(name), meta["key"], "left_anti")
        self._write(name, incoming, mode="append")

    def _delete(self, tree: exp.Delete, params: Sequence[Any]) -> None:
        table = tree.this
        where = tree.args.get("where")
        if where is None:
            keep = exp.select("*").from_(table.copy()).where("false")
        else:
            keep = (
                exp.select(f"{_alias(table)}.*")
                .from_(table.copy())
                .where(exp.not_(exp.func("coalesce", exp.paren(where.this.copy()), exp.false())))
            )
        self._write(table.name, self._frame(keep, params))

    def _update(self, tree: exp.Update, params: Sequence[Any]) -> None:
        table = tree.this
        name, alias = table.name, _alias(table)
        fields = [f.name for f in self._schema(name).fields]
        changes = {e.this.name: e.expression for e in tree.expressions}
        where = tree.args.get("where")
        joined = tree.args.get("from_")
        condition = where.this if where is not None else exp.true()
        if joined is None:
            hit = exp.func("coalesce", exp.paren(condition.copy()), exp.false())
            select = exp.select(
                *[
                    exp.alias_(exp.If(this=hit.copy(), true=changes[f].copy(), false=exp.column(f, alias)), f)
                    if f in changes
                    else exp.column(f, alias)
                    for f in fields
                ]
            ).from_(table.copy())
            self._write(name, self._frame(select, params))
            return
        # UPDATE ... FROM: number the target's rows, find each one's new values through the join (the first
        # match, as DuckDB takes one), then write the table again with them
        from pyspark.sql import functions as F

        self._view(name)
        numbered = f"_upd_{uuid.uuid4().hex[:8]}"
        self.spark.table(name).withColumn(
            "_rid", F.monotonically_increasing_id()
        ).localCheckpoint().createOrReplaceTempView(numbered)
        target = exp.to_table(numbered).as_(alias)
        matches = exp.select(
            exp.column("_rid", alias), *[exp.alias_(e.copy(), f"_new_{f}") for f, e in changes.items()]
        )
        matches = matches.from_(target).join(joined.this.copy(), join_type="cross").where(condition.copy())
        found = self._frame(matches, params).dropDuplicates(["_rid"])
        base = self.spark.table(numbered)
        out = base.join(found.withColumn("_hit", F.lit(True)), "_rid", "left").select(
            *[
                F.when(F.col("_hit"), F.col(f"_new_{f}"))
                .otherwise(F.col(f"`{f}`"))
                .cast(base.schema[f].dataType)
                .alias(f)
                if f in changes
                else F.col(f"`{f}`")
                for f in fields
            ]
        )
        self._write(name, out)
        self.spark.catalog.dropTempView(numbered)

    def _alter(self, tree: exp.Alter) -> None:
        action = tree.args["actions"][0]
        if isinstance(action, exp.AlterRename):
            old, new = tree.this.name, action.this.name
            if new in self._tables():
                self._drop(new)
            temporary = old in self._temp
            source = self._folder(old)
            if temporary:
                self._temp.add(new)
            source.rename(self._folder(new))
            self._temp.discard(old)
            self._seen.pop(old, None)
            self.spark.catalog.dropTempView(old)
            self._view(new)
            return
        raise EngineError(tree.sql(), NotImplementedError("only ALTER TABLE ... RENAME TO runs on Spark"))

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        try:
            tree = sqlglot.parse_one(_inline(sql, params), read=SQL_DIALECT)
        except sqlglot.errors.ParseError as error:
            raise EngineError(sql, error) from error
        frame = self._frame(tree, ())
        try:
            return _with_zone(frame.toArrow())
        except Exception as error:  # noqa: BLE001
            raise EngineError(sql, error) from error

    def register(self, name: str, table: pa.Table) -> None:
        self.spark.createDataFrame(_sparkable(table)).createOrReplaceTempView(name)
        self._registered.add(name)

    def unregister(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        self._registered.discard(name)

    def append_new(self, table: str, rows: pa.Table, key: str) -> int:
        return self._append(table, rows, key)

    def insert_rows(self, table: str, rows: pa.Table) -> int:
        return self._append(table, rows, None)

    def _append(self, table: str, rows: pa.Table, key: str | None) -> int:
        """Append ``rows`` to ``table`` (those whose ``key`` it lacks, with a key); the log's events get their
        message key, derived as they are stored."""
        if rows.num_rows == 0:
            return 0
        incoming = f"_incoming_{uuid.uuid4().hex[:8]}"
        self.register(incoming, rows)
        try:
            columns = ", ".join(rows.column_names)
            target, select = columns, columns
            if table == "events":
                target, select = f"{columns}, message_key", f"{columns}, {MESSAGE_KEY_SQL}"
            new = f" WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.{key} = i.{key})" if key else ""
            count = rows.num_rows if not key else int(self.scalar(f"SELECT count(*) FROM {incoming} AS i{new}"))
            self.execute(f"INSERT INTO {table} ({target}) SELECT {select} FROM {incoming} AS i{new}")
            return count
        finally:
            self.unregister(incoming)

    def _begin(self) -> None:
        pass

    def _commit(self) -> None:
        pass

    def _rollback(self) -> None:
        pass

    def has_table(self, name: str) -> bool:
        return name in self._tables() or name in self._registered

    def close(self) -> None:
        for name in list(self._temp):
            self._drop(name)
        shutil.rmtree(self._temp_root, ignore_errors=True)


def _alias(table: exp.Table) -> str:
    return table.alias_or_name


def _spark_functions(node: Any) -> Any:
    """DuckDB's functions and forms that Spark lacks or spells with another meaning, as Spark SQL."""
    if isinstance(node, exp.Anonymous):
        name, args = node.name.lower(), node.expressions
        if name in _FUNCTIONS:
            return _parse_spark(_FUNCTIONS[name].format(*(_spark(a) for a in args)))
        if name == "bitstring_agg":  # a set of small numbers as bits of a BIGINT (up to 63 of them)
            return _parse_spark(f"bit_or(shiftleft(CAST(1 AS BIGINT), ({_spark(args[0])}) - ({_spark(args[1])})))")
        if name == "list_position":  # 1-based; DuckDB's NULL when absent is Spark's 0
            return _parse_spark(f"nullif(array_position({_spark(args[0])}, {_spark(args[1])}), 0)")
    if isinstance(node, exp.DateDiff) and (node.unit.name if node.unit else "day").lower() == "day":
        # DuckDB counts the day boundaries crossed (calendar days); Spark's DATEDIFF(DAY, ...) whole 24 hours
        return _parse_spark(f"datediff(CAST({_spark(node.this)} AS DATE), CAST({_spark(node.expression)} AS DATE))")
    if isinstance(node, exp.RegexpFullMatch):
        return _parse_spark(f"({_spark(node.this)} RLIKE concat('^(?:', {_spark(node.expression)}, ')$'))")
    if isinstance(node, exp.Getbit):
        return _parse_spark(f"(shiftright({_spark(node.this)}, {_spark(node.expression)}) & 1)")
    if isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.JSON):
        return node.this  # JSON is text here
    if isinstance(node, exp.DataType) and node.is_type(exp.DataType.Type.JSON):
        return exp.DataType.build("STRING")
    if isinstance(node, exp.JSONExtractScalar) and isinstance(node.expression, exp.Array):
        paths = node.expression.expressions  # one path each: DuckDB's list of paths gives a list of values
        return exp.Array(expressions=[exp.JSONExtractScalar(this=node.this.copy(), expression=p.copy()) for p in paths])
    if isinstance(node, (exp.ArrayAgg, exp.First, exp.Last)) and isinstance(node.this, exp.Order):
        # list(x ORDER BY k1 DESC, k2), first(...), last(...): collect (keys..., x) as structs, sort them, keep
        # x (a key sorted descending is negated: numbers only)
        ordered = _sorted_values(node.this)
        if isinstance(node, exp.First):
            return _parse_spark(f"element_at({ordered}, 1)")
        if isinstance(node, exp.Last):
            return _parse_spark(f"element_at({ordered}, -1)")
        return _parse_spark(ordered)
    if isinstance(node, exp.Bracket) and len(node.expressions) == 1 and not isinstance(node.expressions[0], exp.Slice):
        index = node.expressions[0]
        if index.is_int:  # sqlglot holds a literal index from 0; element_at counts from 1, as DuckDB does
            return _parse_spark(f"element_at({_spark(node.this)}, {int(index.name) + 1})")
        return _parse_spark(f"element_at({_spark(node.this)}, {_spark(index)})")
    if isinstance(node, exp.Bracket) and len(node.expressions) == 1 and isinstance(node.expressions[0], exp.Slice):
        part = node.expressions[0]
        start = part.this if part.this is not None else exp.Literal.number(1)
        if part.expression is None:
            return _parse_spark(f"slice({_spark(node.this)}, {_spark(start)}, size({_spark(node.this)}))")
        length = f"({_spark(part.expression)}) - ({_spark(start)}) + 1"
        return _parse_spark(f"slice({_spark(node.this)}, {_spark(start)}, greatest({length}, 0))")
    return node


def _literal(value: Any) -> str:
    """A parameter's value as a SQL literal of DuckDB's dialect (the statement is then translated whole)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        zoned = value if value.tzinfo else value.replace(tzinfo=UTC)
        return f"TIMESTAMPTZ '{zoned.astimezone(UTC).isoformat()}'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def _inline(sql: str, params: Sequence[Any]) -> str:
    """``sql`` with each ``?`` (outside quoted text) replaced by its parameter as a literal."""
    if not params:
        return sql
    values = iter(params)
    parts, quote = [], None
    for char in sql:
        if quote:
            quote = None if char == quote else quote
        elif char in ("'", '"'):
            quote = char
        elif char == "?":
            parts.append(_literal(next(values)))
            continue
        parts.append(char)
    return "".join(parts)


def _sorted_values(order: Any) -> str:
    keys = [
        (f"-({_spark(o.this)})" if o.args.get("desc") else _spark(o.this)) + f" AS k{i}"
        for i, o in enumerate(order.expressions)
    ]
    return f"transform(sort_array(collect_list(struct({', '.join(keys)}, {_spark(order.this)} AS v))), s -> s.v)"


def _without_window_column(node: Any) -> Any:
    if (
        isinstance(node, exp.Select)
        and isinstance(node.args.get("from_") and node.args["from_"].this, exp.Subquery)
        and node.args["from_"].this.alias == "_t"
        and len(node.expressions) == 1
        and isinstance(node.expressions[0], exp.Star)
    ):
        node.set("expressions", [exp.Star(except_=[exp.column("_w")])])
    return node


def _spark(node: Any) -> str:
    """An argument, its own DuckDB forms rewritten first, as Spark SQL."""
    return node.transform(_spark_functions).sql(dialect="spark")


def _parse_spark(sql: str) -> Any:
    return sqlglot.parse_one(sql, read="spark")


def _with_zone(table: pa.Table) -> pa.Table:
    """Times as DuckDB gives them: in UTC, with the zone said (the session's zone is UTC)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            table = table.set_column(i, field.name, table.column(i).cast(pa.timestamp(field.type.unit, "UTC")))
    return table


def _sparkable(table: pa.Table) -> pa.Table:
    """Arrow columns as Spark takes them: unsigned 64-bit numbers as decimals (Spark has no unsigned type)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_uint64(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.decimal128(20, 0)))
    return table
