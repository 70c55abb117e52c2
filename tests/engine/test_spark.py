"""The Spark engine (local mode) gives the same answers as DuckDB: statement by statement for the forms the
stages use (plain Parquet has no DELETE or UPDATE; the engine carries them out itself), and for the import of
the simulated retailer's files and the log's statistics. Skipped where pyspark or Java is missing (``.ci/run``
installs pyspark; the machines have Java 17)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Java is not installed (Spark needs it)", allow_module_level=True)

from omnithread.config import Settings  # noqa: E402
from omnithread.engine.duckdb import DuckDBEngine  # noqa: E402
from omnithread.engine.spark import SparkEngine  # noqa: E402
from omnithread.engine.tables import message_key  # noqa: E402
from omnithread.workspace import Workspace  # noqa: E402
from tests.conftest import assert_same, snapshot  # noqa: E402

STATEMENTS = [
    "CREATE TABLE IF NOT EXISTS things (id VARCHAR, n INTEGER, tags VARCHAR[], seen TIMESTAMPTZ)",
    "INSERT INTO things VALUES ('a', 1, ['x', 'y'], TIMESTAMPTZ '2026-01-02 03:04:05+00'), "
    "('b', 2, [], NULL), ('c', NULL, ['z'], NULL)",
    "INSERT INTO things (id, n) SELECT 'd', 4",
    "UPDATE things SET n = n * 10 WHERE n >= 2",
    "CREATE OR REPLACE TEMP TABLE other AS SELECT 'a' AS id, 'first' AS label UNION ALL SELECT 'c', 'third'",
    "UPDATE things SET tags = [o.label] FROM other o WHERE o.id = things.id",
    "DELETE FROM things WHERE n = 40",
    "CREATE TABLE IF NOT EXISTS keyed (value VARCHAR PRIMARY KEY, kind VARCHAR, added TIMESTAMPTZ DEFAULT now())",
    "INSERT INTO keyed (value, kind) VALUES ('v1', 'email') ON CONFLICT DO NOTHING",
    "INSERT INTO keyed (value, kind) VALUES ('v1', 'phone') ON CONFLICT DO NOTHING",
    "CREATE OR REPLACE TABLE summary AS SELECT id, coalesce(n, -1) AS n, list_sort(tags)[1:1] AS first_tag, "
    "regexp_full_match(id, '[a-c]') AS early, list_position(['a', 'b', 'c'], id) AS position FROM things",
    "ALTER TABLE summary RENAME TO renamed",
    "CREATE TABLE bits AS SELECT bitstring_agg(i, 1, 5) AS b FROM (VALUES (1), (3)) AS v(i)",
]

QUERIES = [
    "SELECT id, n, tags FROM things ORDER BY id",
    "SELECT value, kind, added IS NOT NULL AS stamped FROM keyed",
    "SELECT * FROM renamed ORDER BY id",
    "SELECT get_bit(b, 0) AS first, get_bit(b, 1) AS second, get_bit(b, 2) AS third FROM bits",
    "SELECT md5_number_lower('message-1') AS k",
]


def run(engine) -> list[list[dict]]:
    for sql in STATEMENTS:
        engine.execute(sql)
    return [engine.rows(sql) for sql in QUERIES]


@pytest.fixture(scope="module")
def spark_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spark") / "omnithread.duckdb"


def test_each_form_the_stages_use_gives_the_same_rows_on_spark(tmp_path, spark_dir):
    duck = DuckDBEngine(tmp_path / "omnithread.duckdb")
    spark = SparkEngine(spark_dir)
    try:
        expected, got = run(duck), run(spark)
    finally:
        duck.close()
        spark.close()
    assert got[0] == expected[0]  # update, update ... from a joined table, delete
    assert got[1] == expected[1] == [{"value": "v1", "kind": "email", "stamped": True}]  # the key's first row kept
    assert got[2] == expected[2]  # CREATE OR REPLACE ... AS, DuckDB's functions rewritten, a rename
    assert [int(v) for v in got[3][0].values()] == [int(v) for v in expected[3][0].values()]  # bits of numbers 1, 3
    assert int(got[4][0]["k"]) == int(expected[4][0]["k"]) == message_key("message-1")
    # the tables are Parquet folders any reader reads, DuckDB's included
    folder = spark_dir.parent / "spark" / "things"
    assert {r["id"] for r in DuckDBEngine().rows(f"SELECT id FROM read_parquet('{folder}/*.parquet')")} == {
        "a",
        "b",
        "c",
    }


def test_the_matchers_string_similarities_are_duckdbs(spark_dir):
    """Jaro-Winkler and Damerau-Levenshtein, which Spark SQL lacks, as Python UDFs: DuckDB's answers on random
    strings (accents, blanks, empty strings, NULLs)."""
    import random

    rng = random.Random(3)
    names = ["".join(rng.choice("abcdeéø ") for _ in range(rng.randint(0, 12))) for _ in range(2000)]
    table = pa.table({"a": names[:1000] + [None, "", "x"], "b": names[1000:] + ["x", "", None]})
    spark, duck = SparkEngine(spark_dir), DuckDBEngine()
    query = (
        "SELECT a, b, jaro_winkler_similarity(a, b) AS jw, damerau_levenshtein(a, b) AS dl FROM t "
        "ORDER BY a NULLS LAST, b NULLS LAST"
    )
    try:
        for engine in (spark, duck):
            engine.register("t", table)
        got, expected = spark.rows(query), duck.rows(query)
    finally:
        spark.close()
        duck.close()
    assert len(got) == len(expected) == 1003
    for g, e in zip(got, expected):
        assert (g["a"], g["b"], g["dl"]) == (e["a"], e["b"], e["dl"])
        assert g["jw"] == pytest.approx(e["jw"], abs=1e-12) if e["jw"] is not None else g["jw"] is None


def test_the_probabilistic_matcher_learns_and_scores_on_spark_as_in_memory(tmp_path, spark_dir):
    """Sign-up records of a simulated retailer large enough to learn from: the matcher's blocking, comparisons
    and pattern counts on Spark give the pairs, probabilities and parameters the in-memory engine gives."""
    from omnithread.identity.matching import learn_records
    from omnithread.sim import WorldConfig, simulate

    manifest = simulate(WorldConfig(people=700, days=20, products=200, seed=5), tmp_path / "world")
    with Workspace(Settings(data_dir=tmp_path / "data")) as ws:
        ws.ingestor().ingest_paths(manifest["sources"])
        from omnithread.flows import resolve_persons

        report, _ = resolve_persons(ws)
        records = ws.engine.query("SELECT * FROM person_attributes")
    assert report.probabilistic_links > 0, report.probabilistic_skipped
    expected = learn_records(records)
    spark = SparkEngine(spark_dir)
    try:
        got = learn_records(records, engine=spark)
        assert not spark.has_table("_records") and not spark.has_table("_compared")  # its scratch is gone
    finally:
        spark.close()
    assert (got.candidates, got.patterns, got.iterations) == (
        expected.candidates,
        expected.patterns,
        expected.iterations,
    )
    assert got.prior == pytest.approx(expected.prior, rel=1e-9)
    for a, b in zip(got.m + got.u, expected.m + expected.u):
        assert a == pytest.approx(b, rel=1e-9)
    pairs = [(r["id_l"], r["id_r"], round(r["match_probability"], 9)) for r in got.pairs.to_pylist()]
    assert pairs == [(r["id_l"], r["id_r"], round(r["match_probability"], 9)) for r in expected.pairs.to_pylist()]
    assert len(pairs) > 10


def test_a_registered_arrow_table_and_appends_with_message_keys(spark_dir):
    spark = SparkEngine(spark_dir)
    try:
        spark.register("_keys", pa.table({"k": pa.array([message_key("m")], pa.uint64())}))
        assert int(spark.scalar("SELECT k FROM _keys")) == message_key("m")
        spark.unregister("_keys")
        assert not spark.has_table("_keys")
    finally:
        spark.close()


# each table of the thread with the columns that name a row
KEYS = {
    "identity_map": ("identifier",),
    "identity_edges": ("a", "b"),
    "persons": ("person_id",),
    "profiles": ("person_id",),
    "skipped_rows": ("stage", "message_id", "field"),
    "interactions": ("person_id", "product_id"),
    "lifetime_values": ("person_id",),
}


def _plain(value):
    """A value as both engines' answers can be compared: numbers to 10 significant digits, maps as sorted pairs."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) or hasattr(value, "as_integer_ratio"):
        return float(f"{float(value):.10g}")  # 10 significant digits: sums may differ in the last bits
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    return value


@pytest.fixture(scope="module")
def both_engines(small_world, tmp_path_factory):
    """The simulated retailer imported and resolved (persons and profiles) on DuckDB and on Spark, with one
    secret, so keyed hashes are equal; what each made of it."""
    import os

    from omnithread.analytics import ANALYTICS_VIEWS
    from omnithread.flows import analytics_view, resolve_persons, score_lifetime, train_model

    out, manifest = small_world
    root = tmp_path_factory.mktemp("engines")
    saved = os.environ.get("OMNITHREAD_SECRET")
    os.environ["OMNITHREAD_SECRET"] = "one secret for both data directories, " * 2
    made = {}
    try:
        for name in ("duckdb", "spark"):
            with Workspace(Settings(data_dir=root / name, engine=name)) as ws:
                report = ws.ingestor().ingest_paths(manifest["sources"])
                events, rejected = snapshot(ws)
                for row in events.values():
                    row["message_key"] = int(row["message_key"])  # DuckDB's UBIGINT, Spark's DECIMAL(20,0)
                resolved = resolve_persons(ws)
                model = train_model(ws)
                score_lifetime(ws)  # summaries by the engine, fits in Python, profiles joined again
                tables = {t: ws.engine.rows(f"SELECT * FROM {t}") for t in KEYS}
                persons = [r["person_id"] for r in ws.engine.rows("SELECT person_id FROM persons ORDER BY 1 LIMIT 40")]
                answers = {p: model.recommend(p).items for p in persons}
                made[name] = {
                    "counts": (report.accepted, report.rejected, report.duplicates),
                    "stats": ws.log.stats(),
                    "log": (events, rejected),
                    "persons": resolved.persons if hasattr(resolved, "persons") else None,
                    "tables": tables,
                    "answers": answers,
                    "analytics": {view: analytics_view(ws, view) for view in ANALYTICS_VIEWS},
                }
    finally:
        if saved is None:
            os.environ.pop("OMNITHREAD_SECRET", None)
        else:
            os.environ["OMNITHREAD_SECRET"] = saved
    return made


def test_the_retailers_files_import_into_the_same_log_with_the_same_statistics(both_engines):
    duck, spark = both_engines["duckdb"], both_engines["spark"]
    assert duck["counts"] == spark["counts"] and duck["counts"][0] > 1000
    assert duck["stats"] == spark["stats"]  # by channel, by event, by day
    assert_same(duck["log"], spark["log"])  # every event (its identifiers and message key too), every rejection


@pytest.mark.parametrize("table", list(KEYS))
def test_resolution_and_profiles_give_the_same_tables_row_by_row(both_engines, table):
    """The same partition of identifiers into persons (with the same person ids), the same links with their
    evidence and state, the same profiles, column by column."""
    rows = {}
    for name in ("duckdb", "spark"):
        rows[name] = {
            tuple(r[k] for k in KEYS[table]): {c: _plain(v) for c, v in r.items()}
            for r in both_engines[name]["tables"][table]
        }
    assert rows["duckdb"].keys() == rows["spark"].keys()
    assert table == "skipped_rows" or len(rows["duckdb"]) > 100
    for key, row in rows["duckdb"].items():
        assert rows["spark"][key] == row, key


def test_the_model_trained_on_either_engine_recommends_the_same(both_engines):
    """Interactions are built by the engine; the model is fitted in Python on them (aggregated: one row per
    person and product), so equal interactions give equal answers."""
    duck, spark = both_engines["duckdb"]["answers"], both_engines["spark"]["answers"]
    assert len(duck) == 40 and duck == spark
    assert sum(1 for items in duck.values() if items) > 20


@pytest.mark.parametrize("view", ["stores", "hourly", "shelves", "plates", "journeys", "revenue", "cohorts", "rfm"])
def test_the_analytics_give_the_same_figures_on_spark(both_engines, view):
    """The understand stage's views are the engine's SQL: the same figures on both."""
    duck, spark = (_plain(both_engines[name]["analytics"][view]) for name in ("duckdb", "spark"))
    assert duck == spark
    assert duck, view


def test_an_erasure_is_refused_on_spark_in_one_clear_sentence(spark_dir):
    from omnithread.errors import UnavailableError
    from omnithread.flows import erase

    with Workspace(Settings(data_dir=spark_dir.parent, engine="spark")) as ws:
        with pytest.raises(UnavailableError, match="no transactions"):
            erase(ws, "someone@example.org")


def test_an_empty_log_resolves_to_no_persons_on_spark(tmp_path):
    """No events, so no rules to spell links with: an empty list still has a type on Spark."""
    from omnithread.flows import resolve_persons

    with Workspace(Settings(data_dir=tmp_path, engine="spark")) as ws:
        resolve_persons(ws)
        assert ws.engine.rows("SELECT count(*) AS n FROM persons") == [{"n": 0}]
        assert ws.engine.rows("SELECT count(*) AS n FROM identity_edges") == [{"n": 0}]


def _figures(value, path=""):
    """Every figure of a demo's --json answer but its timings and paths."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("phases", "sources_dir", "source", "data_dir") or k.endswith(("seconds", "_s")):
                continue
            out[k] = _figures(v, f"{path}.{k}")
        return out
    if isinstance(value, list):
        return [_figures(v, path) for v in value]
    if isinstance(value, float):
        return round(value, 9)
    return value


@pytest.mark.slow
def test_the_demo_on_spark_prints_the_same_figures_as_on_duckdb(tmp_path):
    """``omnithread demo --engine spark --json`` against the default, with one secret: every figure the same
    (the simulated retailer, the import, persons and their accuracy, recommendations and their evaluation, the
    ablation), only timings and paths differ. Slow (Spark takes minutes): run by .ci/run."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMNITHREAD_SECRET="one secret for both data directories, " * 2)
    answers = {}
    for engine in ("duckdb", "spark"):
        done = subprocess.run(
            [sys.executable, "-c", "from omnithread.cli.main import main; main()", "demo", "--people", "1500"]
            + ["--json", "--engine", engine, "--data-dir", str(tmp_path / engine)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        answers[engine] = json.loads(done.stdout.replace(str(tmp_path / engine), "<data dir>"))
    assert answers["duckdb"]["identity"]["persons"] > 500
    assert _figures(answers["spark"]) == _figures(answers["duckdb"])
