"""omnithread on a Spark cluster, not local mode: a standalone master and a worker (real JVM processes, started
here from pyspark's own scripts), the import sent with ``spark-submit`` and the resolve pointed at the master
with ``OMNITHREAD_SPARK_MASTER``, as ``docs/scale.md`` tells a user to. The persons found are those DuckDB
finds. Slow (a minute or two of JVMs): run by ``.ci/run``; skipped where pyspark or Java is missing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Java is not installed (Spark needs it)", allow_module_level=True)

from pyspark.find_spark_home import _find_spark_home  # noqa: E402

from omnithread.engine.duckdb import DuckDBEngine  # noqa: E402

pytestmark = pytest.mark.slow
SECRET = "one secret for the cluster and for DuckDB, long enough"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, ready, seconds: float = 60.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                state = json.load(answer)
            if ready(state):
                return state
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not become ready in {seconds} s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Spark standalone cluster on this machine: one master, one worker with 2 cores; its master's URL and
    the master's state page."""
    home = Path(_find_spark_home())
    root = tmp_path_factory.mktemp("cluster")
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(root))
    spark_class = str(home / "bin" / "spark-class")
    master_url = f"spark://127.0.0.1:{port}"
    processes = []
    try:
        processes.append(
            subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
                + ["--port", str(port), "--webui-port", str(ui)],
                env=env,
                stdout=(root / "master.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        )
        state_url = f"http://127.0.0.1:{ui}/json/"
        _wait(state_url, lambda s: s.get("status") == "ALIVE")
        processes.append(
            subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--cores", "2", "--memory", "2g"]
                + ["--webui-port", str(worker_ui), "--work-dir", str(root / "work"), master_url],
                env=env,
                stdout=(root / "worker.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        )
        _wait(state_url, lambda s: s.get("aliveworkers") == 1)
        yield {"master": master_url, "state": state_url, "env": env, "work": root / "work"}
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_import_by_spark_submit_and_resolve_on_the_cluster_find_the_persons_duckdb_finds(cluster, tmp_path):
    python = sys.executable
    cli = [python, "-m", "omnithread.cli"]
    env = dict(cluster["env"], OMNITHREAD_SECRET=SECRET, PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    world = tmp_path / "world"
    subprocess.run(cli + ["simulate", str(world), "--people", "300", "--days", "20", "--json"], env=env, check=True)
    sources = json.loads((world / "manifest.json").read_text())["sources"]

    def run(command, **extra):
        done = subprocess.run(command, env=dict(env, **extra), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    # on the cluster: the import as a spark-submit application (the CLI's file is what it runs), the resolve
    # as a plain command that names the master
    submit = str(Path(cluster["env"]["SPARK_HOME"]) / "bin" / "spark-submit")
    main_file = str(Path(__import__("omnithread.cli.__main__").cli.__main__.__file__))
    on_cluster = tmp_path / "cluster-data"
    imported = run(
        [submit, "--master", cluster["master"], "--conf", "spark.executor.memory=1g", main_file, "ingest"]
        + sources
        + ["--engine", "spark", "--data-dir", str(on_cluster), "--json"]
    )
    resolved = run(
        cli + ["resolve", "--engine", "spark", "--data-dir", str(on_cluster), "--json"],
        OMNITHREAD_SPARK_MASTER=cluster["master"],
    )
    # the default engine, on this machine
    local = tmp_path / "duckdb-data"
    expected_import = run(cli + ["ingest", *sources, "--data-dir", str(local), "--json"])
    expected = run(cli + ["resolve", "--data-dir", str(local), "--json"])

    for key in ("received", "accepted", "duplicates", "rejected", "rejected_by_reason"):
        assert imported[key] == expected_import[key], key
    assert resolved["persons"] == expected["persons"] > 100
    assert resolved["links_kept"] == expected["links_kept"]
    # the same partition of identifiers, with the same person ids: the cluster's table read as plain Parquet
    reader = DuckDBEngine()
    folder = on_cluster / "spark" / "identity_map"
    got = reader.rows(f"SELECT identifier, person_id FROM read_parquet('{folder}/*.parquet') ORDER BY 1")
    duck = DuckDBEngine(local / "omnithread.duckdb")
    try:
        assert got == duck.rows("SELECT identifier, person_id FROM identity_map ORDER BY 1")
    finally:
        duck.close()

    # both ran as applications of the cluster, their tasks in the worker's executors, not in local mode
    state = _wait(cluster["state"], lambda s: len(s.get("completedapps", [])) >= 2)
    assert len(state["completedapps"]) == 2 and all(app["cores"] > 0 for app in state["completedapps"])
    assert len([p for p in cluster["work"].iterdir() if p.name.startswith("app-")]) == 2
