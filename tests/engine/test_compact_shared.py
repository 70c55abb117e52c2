"""Rewriting the database file (after an erasure) while other connections of the process are open lost
their later commits: they went to the replaced file. It is owed instead and done by the last to close."""

from pathlib import Path

import duckdb

from omnithread.engine.duckdb import DuckDBEngine


def _count(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT count(*) FROM t").fetchone()[0]


def test_a_rewrite_waits_for_the_last_connection_and_loses_no_commit(tmp_path):
    path = tmp_path / "log.duckdb"
    collector, eraser = DuckDBEngine(path), DuckDBEngine(path)
    collector.execute("CREATE TABLE t (x INTEGER)")
    collector.execute("INSERT INTO t SELECT * FROM range(1000)")
    eraser.execute("DELETE FROM t WHERE x < 10")
    assert eraser.compact() is False  # another connection is open: owed, not done
    assert Path(f"{path}.compact-pending").exists()
    collector.execute("INSERT INTO t SELECT * FROM range(1000, 3000)")  # commits after the erasure
    eraser.close()
    assert Path(f"{path}.compact-pending").exists()
    collector.execute("INSERT INTO t VALUES (5000)")
    collector.close()  # the last one: the file is rewritten now
    assert not Path(f"{path}.compact-pending").exists() and not Path(f"{path}.compact").exists()
    assert _count(path) == 990 + 2000 + 1


def test_a_rewrite_owed_by_a_process_that_died_is_done_at_the_next_open(tmp_path):
    path = tmp_path / "log.duckdb"
    engine = DuckDBEngine(path)
    engine.execute("CREATE TABLE t (x INTEGER)")
    engine.execute("INSERT INTO t SELECT * FROM range(100)")
    engine.close()
    Path(f"{path}.compact-pending").touch()  # as a crash leaves it
    again = DuckDBEngine(path)
    assert not Path(f"{path}.compact-pending").exists()
    assert again.scalar("SELECT count(*) FROM t") == 100
    assert again.compact() is True  # alone: done at once
    again.close()
