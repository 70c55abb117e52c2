"""One running omnithread: every command works beside it, it runs the thread by itself, it stops and crashes
cleanly. Each test runs real server processes and the real console script."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from omnithread.api.jobs import JobOutcome, JobStore, JobWorker, report_progress
from omnithread.api.keys import KeyStore
from omnithread.api.schedule import drop_command
from omnithread.config import FILE_SETTINGS, Settings
from omnithread.errors import ConfigError
from omnithread.privacy import PayloadCipher, Pseudonymiser, load_secret
from omnithread.privacy.payload import personal_data_rule
from omnithread.sim import WorldConfig, simulate
from tests.conftest import Server, basic


def cli(data_dir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMNITHREAD_DATA_DIR=str(data_dir), COLUMNS="120")
    env.pop("OMNITHREAD_SECRET", None)
    return subprocess.run(
        [sys.executable, "-c", "from omnithread.cli.main import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    simulate(WorldConfig(people=400, days=20, products=200, seed=3), out)
    return out / "sources"


@pytest.fixture
def data_dir(tmp_path, world) -> Path:
    data = tmp_path / "data"
    done = cli(data, "ingest", str(world / "events.jsonl"), str(world / "store_events.jsonl"))
    assert done.returncode == 0, done.stderr
    return data


def wait_for(condition, seconds: float = 60, step: float = 0.05):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def jobs_in(data_dir: Path) -> list[dict]:
    with sqlite3.connect(data_dir / "jobs.sqlite") as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM jobs ORDER BY created_at")]


def test_every_command_gives_the_same_output_and_exit_code_with_a_server_running(data_dir, world, tmp_path):
    without = {
        "stats": cli(data_dir, "stats", "--json"),
        "stats table": cli(data_dir, "stats"),
        "rejected": cli(data_dir, "rejected", "list", "--json"),
        "unknown person": cli(data_dir, "person", "nobody@example.org"),
    }
    # the server's own work off, so the log stays as the commands without it saw it
    quiet = {"OMNITHREAD_RETRAIN_EVENTS": "0", "OMNITHREAD_RETRAIN_HOURS": "0", "OMNITHREAD_REFRESH_SECONDS": "0"}
    server = Server(data_dir, quiet).start()
    try:
        assert json.loads((data_dir / "server.json").read_text())["pid"] == server.proc.pid
        assert (data_dir / "server.json").stat().st_mode & 0o077 == 0
        with_server = {
            "stats": cli(data_dir, "stats", "--json"),
            "stats table": cli(data_dir, "stats"),
            "rejected": cli(data_dir, "rejected", "list", "--json"),
            "unknown person": cli(data_dir, "person", "nobody@example.org"),
        }
        for name, before in without.items():
            after = with_server[name]
            assert (after.returncode, after.stdout) == (before.returncode, before.stdout), name
        assert with_server["unknown person"].returncode == 2
        assert with_server["unknown person"].stderr == without["unknown person"].stderr  # the same one line
        # a command with a file relative to its own working directory, run in the server's process
        till = cli(data_dir, "ingest", "till-S01.csv", "--json", cwd=world)
        assert till.returncode == 0, till.stderr
        assert json.loads(till.stdout)["accepted"] > 0
        resolved = cli(data_dir, "resolve", "--json")
        assert resolved.returncode == 0, resolved.stderr
        assert json.loads(resolved.stdout)["persons"] > 0
        listed = cli(data_dir, "jobs", "--json")
        kinds = [job["kind"] for job in json.loads(listed.stdout)["jobs"]]
        assert {"stats", "rejected list", "person", "ingest", "resolve"} <= set(kinds)
        assert all(job["origin"] == "cli" for job in json.loads(listed.stdout)["jobs"])
        # a second server on the same directory is refused in one line
        second = cli(data_dir, "serve", "--port", "1")
        assert second.returncode == 2 and "already runs" in second.stderr
    finally:
        server.stop()
    assert not (data_dir / "server.json").exists()
    assert cli(data_dir, "stats", "--json").returncode == 0  # without the server, run here again


def test_the_server_refreshes_persons_retrains_and_imports_its_drop_folder(data_dir, world):
    env = {
        "OMNITHREAD_REFRESH_SECONDS": "1",
        "OMNITHREAD_RETRAIN_EVENTS": "100",
        "OMNITHREAD_RETRAIN_MIN_MINUTES": "0",
        "OMNITHREAD_DROP_SETTLE_SECONDS": "1",
    }
    store = KeyStore(data_dir, load_secret(data_dir))
    read_key = store.create("read", "dashboard")[0]
    store.close()
    server = Server(data_dir, env).start()
    try:
        drop = data_dir / "drop"
        wait_for(lambda: (drop / "processing").is_dir())
        # a model is trained by itself: there is none and there are events
        wait_for(lambda: (data_dir / "models" / "index.json").exists(), 120)
        first_model = (data_dir / "models" / "index.json").stat().st_mtime_ns
        (drop / ".till-S02.csv.part").write_bytes((world / "till-S02.csv").read_bytes())
        (drop / "notes.txt").write_text("not an export")
        time.sleep(2.5)
        assert (drop / ".till-S02.csv.part").exists()  # a file still being written is left alone
        (drop / ".till-S02.csv.part").rename(drop / "till-S02.csv")
        done = wait_for(lambda: list((drop / "done").glob("*till-S02.csv")), 60)
        assert "accepted" in done[0].with_name(done[0].name + ".report.txt").read_text().lower()
        failed = wait_for(lambda: list((drop / "failed").glob("*notes.txt")), 30)
        assert "not a kind of file" in failed[0].with_name(failed[0].name + ".reasons.txt").read_text()
        assert not list((drop / "processing").iterdir()) and not (drop / "till-S02.csv").exists()
        drop_jobs = [j for j in jobs_in(data_dir) if j["origin"] == "drop"]
        assert len(drop_jobs) == 1 and drop_jobs[0]["state"] == "done"  # imported once
        # the till's rows (more than 100 events) made the model due again: retrained and swapped in
        wait_for(lambda: (data_dir / "models" / "index.json").stat().st_mtime_ns != first_model, 120)
        trains = [j for j in jobs_in(data_dir) if j["kind"] == "train"]
        assert len(trains) >= 2 and all(j["origin"] == "schedule" and "--keep-serving" in j["argv"] for j in trains)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'omnithread_job_duration_seconds_count{kind="train",state="done"}' in metrics
        assert httpx.get(f"{server.url}/ready").json() == {"ready": True}
        page = httpx.get(f"{server.url}/dashboard", auth=(read_key, "")).text
        assert "<h2>Jobs</h2>" in page and trains[0]["job_id"] in page
    finally:
        server.stop()


def test_kill_9_during_a_job_loses_nothing_and_the_job_runs_again(data_dir):
    env = {"OMNITHREAD_RETRAIN_EVENTS": "0", "OMNITHREAD_RETRAIN_HOURS": "0", "OMNITHREAD_REFRESH_SECONDS": "0"}
    server = Server(data_dir, env).start()
    events_before = httpx.get(f"{server.url}/health").json()["events"]
    asker = subprocess.Popen(
        [sys.executable, "-c", "from omnithread.cli.main import main; main()", "resolve", "--json"],
        env=dict(os.environ, OMNITHREAD_DATA_DIR=str(data_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any(j["kind"] == "resolve" and j["state"] == "running" for j in jobs_in(data_dir)), 60, 0.01)
        server.kill()
    finally:
        asker.kill()
        asker.wait(10)
    job = next(j for j in jobs_in(data_dir) if j["kind"] == "resolve")
    assert job["state"] == "running"
    server = Server(data_dir, env).start()  # a stale server.json is ignored: the process is gone
    try:
        job = wait_for(
            lambda: next((j for j in jobs_in(data_dir) if j["kind"] == "resolve" and j["state"] == "done"), None)
        )
        assert job["runs"] == 2
        assert httpx.get(f"{server.url}/health").json()["events"] == events_before
    finally:
        server.stop()
    shown = cli(data_dir, "jobs", job["job_id"], "--json")
    assert json.loads(json.loads(shown.stdout)["stdout"])["persons"] > 0


def test_sigterm_lets_the_running_job_finish_and_exits_cleanly(data_dir):
    server = Server(data_dir, {"OMNITHREAD_RETRAIN_EVENTS": "0", "OMNITHREAD_RETRAIN_HOURS": "0"}).start()
    asker = subprocess.Popen(
        [sys.executable, "-c", "from omnithread.cli.main import main; main()", "resolve", "--json"],
        env=dict(os.environ, OMNITHREAD_DATA_DIR=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: any(j["kind"] == "resolve" and j["state"] == "running" for j in jobs_in(data_dir)), 60, 0.01)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) in (0, -signal.SIGTERM)  # (uvicorn ends by the signal once it has stopped)
    job = next(j for j in jobs_in(data_dir) if j["kind"] == "resolve")
    assert job["state"] == "done" and job["runs"] == 1
    assert not (data_dir / "server.json").exists()
    asker.wait(30)


def _store(tmp_path: Path) -> JobStore:
    secret = load_secret(tmp_path)
    cipher = PayloadCipher(secret)
    return JobStore(tmp_path, cipher, personal_data_rule(Pseudonymiser(secret), cipher).text)


def test_a_job_naming_a_person_keeps_no_raw_identifier_and_lists_it_hashed(tmp_path):
    store = _store(tmp_path)
    job = store.submit("person", ["person", "Jane.Doe@Example.org", "--data-dir", "/x"], "cli")
    assert job.argv[0] == "person" and job.argv[1].startswith("em_")
    assert store.argv_to_run(job.job_id)[1] == "Jane.Doe@Example.org"  # what runs is what was asked
    store.take()
    store.finish(job.job_id, JobOutcome(2, "", "error: no person with id 'Jane.Doe@Example.org'\n"))
    assert store.get(job.job_id).stderr == "error: no person with id 'Jane.Doe@Example.org'\n"
    store.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("jobs.sqlite"))
    assert b"Jane" not in stored and b"jane" not in stored and b"Example.org" not in stored


def test_jobs_are_requeued_after_a_crash_and_kept_with_their_output(tmp_path):
    store = _store(tmp_path)
    job = store.submit("resolve", ["resolve"], "cli")
    taken = store.take()
    assert taken is not None and taken.job_id == job.job_id and taken.state == "running"
    assert store.take() is None
    assert store.requeue_interrupted() == 1  # as a new server starts
    again = store.take()
    assert again is not None and again.runs == 2
    store.finish(job.job_id, JobOutcome(0, "printed", ""))
    assert store.get(job.job_id).as_dict()["stdout"] == "printed"
    assert store.counts() == {"done": 1}
    assert (tmp_path / "jobs.sqlite").stat().st_mode & 0o077 == 0


def test_dropped_files_are_known_by_name_and_server_settings_by_environment(monkeypatch, tmp_path):
    assert drop_command(Path("till-S01.csv")) == ["ingest"]
    assert drop_command(Path("events.jsonl")) == ["ingest"]
    assert drop_command(Path("catalogue-2026.csv")) == ["catalogue"]
    assert drop_command(Path("Stock.csv")) == ["inventory"]
    assert drop_command(Path("readme.txt")) is None
    monkeypatch.setenv("OMNITHREAD_REFRESH_SECONDS", "2.5")
    monkeypatch.setenv("OMNITHREAD_RETRAIN_EVENTS", "0")
    settings = Settings.from_env(tmp_path)
    assert (settings.refresh_seconds, settings.retrain_events, settings.drop_path) == (2.5, 0, tmp_path / "drop")
    monkeypatch.setenv("OMNITHREAD_RETRAIN_HOURS", "-1")
    with pytest.raises(ConfigError, match="retrain_hours"):
        Settings.from_env(tmp_path)


def test_the_settings_file_documents_every_setting_and_the_environment_wins(monkeypatch, tmp_path):
    example = Path(__file__).parents[2] / "docs" / "omnithread.example.toml"
    assert set(tomllib.loads(example.read_text())) == set(FILE_SETTINGS)  # every setting, and no other
    monkeypatch.setenv("OMNITHREAD_CONFIG", str(example))
    assert Settings.from_env() == Settings()  # the example holds the defaults
    mine = tmp_path / "omnithread.toml"
    mine.write_text(f'data_dir = "{tmp_path}"\nrefresh_seconds = 1.5\nip_mode = "hash"\n')
    monkeypatch.setenv("OMNITHREAD_CONFIG", str(mine))
    monkeypatch.setenv("OMNITHREAD_IP_MODE", "truncate")
    settings = Settings.from_env()
    assert (settings.data_dir, settings.refresh_seconds, settings.ip_mode) == (tmp_path, 1.5, "truncate")
    mine.write_text("refresh_secs = 1\n")
    with pytest.raises(ConfigError, match="refresh_secs"):
        Settings.from_env()


def test_a_running_job_says_how_far_it_has_got(tmp_path):
    store = _store(tmp_path)
    seen = []

    def run(job):
        report_progress("step one")
        seen.append(wait_for(lambda: store.get(job.job_id).progress, 5))
        return JobOutcome(0, "", "")

    worker = JobWorker(store, run, poll_seconds=0.01)
    worker.start()
    job = store.submit("demo", ["demo"], "cli")
    worker.wake()
    done = wait_for(lambda: store.get(job.job_id).finished and store.get(job.job_id), 10)
    worker.stop(5)
    assert seen == ["step one"] and done.state == "done"
    report_progress("outside a job")  # nothing to say it to: ignored


def test_the_running_server_sends_new_events_to_a_webhook_as_they_arrive(data_dir, tmp_path):
    """A destination added by the command line (a job of the running server); events sent to the collector
    afterwards reach the receiver, signed, without anyone running a delivery; so do the audience joins they
    cause, once the server folds them into persons."""
    import json as jsonlib

    from omnithread.api.keys import KeyStore
    from omnithread.destinations import webhooks
    from omnithread.privacy.secret import load_secret
    from tests.destinations.test_webhooks import Receiver

    store = KeyStore(data_dir, load_secret(data_dir))
    write = store.create("write", "webhook test")[0]
    store.close()
    receiver = Receiver()
    secret = tmp_path / "secret"
    secret.write_text("a webhook secret of some length")
    server = Server(data_dir).start()
    try:
        made = cli(data_dir, "audience", "create", "big-baskets", "--rule", "spent(1) >= 11")
        assert made.returncode == 0, made.stderr
        added = cli(
            data_dir, "destinations", "add", "crm", "--url", f"{receiver.url}/ok", "--secret-file", str(secret),
            "--events", "Order Completed", "--audiences", "big-baskets",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        auth = basic(write)
        for n in range(3):
            sent = httpx.post(
                f"{server.url}/v1/track",
                headers=auth,
                json={
                    "type": "track",
                    "event": "Order Completed",
                    "messageId": f"webhook-{n}",
                    "userId": f"buyer-{n}",
                    "properties": {"order_id": f"O-{n}", "total": 10.0 + n, "products": [{"product_id": "P1"}]},
                    "context": {"channel": "web"},
                },
            )
            assert sent.status_code == 200, sent.text

        def events_and_joins():
            bodies = [jsonlib.loads(r["body"]) for r in receiver.requests["ok"]]
            events = [b for b in bodies if b["type"] == "event"]
            joins = [b for b in bodies if b["type"] == "audience" and b["change"] == "joined"]
            return (events, joins) if len(events) >= 3 and len(joins) >= 2 else None

        events, joins = wait_for(events_and_joins, seconds=90)
        assert sorted(b["message_id"] for b in events) == ["webhook-0", "webhook-1", "webhook-2"]
        # buyer-1 and buyer-2 spent 11 and 12 in one order; buyer-0's 10 is not enough
        assert {b["user_id"] for b in events} == {"buyer-0", "buyer-1", "buyer-2"}
        persons = {
            user: jsonlib.loads(cli(data_dir, "person", user, "--json").stdout)["person_id"]
            for user in ("buyer-1", "buyer-2")
        }
        assert {j["person_id"] for j in joins} == set(persons.values())
        got = receiver.requests["ok"]
        for r in got:
            headers = {k.lower(): v for k, v in r["headers"].items()}
            assert webhooks.verify(
                "a webhook secret of some length", headers["x-omnithread-timestamp"], r["body"],
                headers["x-omnithread-signature"],
            )  # fmt: skip
        listed = cli(data_dir, "destinations", "list", "--json")
        delivered = jsonlib.loads(listed.stdout)[0]["delivered"]
        assert listed.returncode == 0 and delivered >= 5  # the events, the joins, and the leaves of the old window
        metrics = httpx.get(f"{server.url}/metrics").text
        line = 'omnithread_destination_deliveries{destination="crm",status="delivered"} '
        counted = float(next(x for x in metrics.splitlines() if x.startswith(line)).removeprefix(line))
        assert counted >= delivered  # (more may have gone out since the listing)
        assert 'omnithread_destination_failed_attempts{destination="crm"} 0.0' in metrics
    finally:
        server.stop()
        receiver.close()
