"""Shared fixtures: throwaway data directories and one small simulated retailer with its truth."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import pytest

from omnithread.config import Settings
from omnithread.privacy import reveal_encrypted_values
from omnithread.sim import WorldConfig, simulate
from omnithread.workspace import Workspace

SMALL_WORLD = WorldConfig(people=400, days=20, holdout_days=5, products=200, seed=11, malformed_rate=0.01)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch) -> Settings:
    monkeypatch.delenv("OMNITHREAD_SECRET", raising=False)
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def handmade(tmp_path: Path, settings: Settings):
    """The hand-made log of ``tests/analytics/test_statistics.py`` (every figure known), imported and
    resolved: the workspace."""
    from omnithread.flows import resolve_persons
    from tests.analytics.test_statistics import LOG

    with Workspace(settings) as ws:
        report = ws.ingestor().ingest_paths([write_lines(tmp_path / "handmade.jsonl", LOG)])
        assert report.accepted == len(LOG)
        resolve_persons(ws)
        yield ws


@pytest.fixture
def workspace(settings: Settings):
    with Workspace(settings) as ws:
        yield ws


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> tuple[Path, dict]:
    """A small simulated retailer: (output folder, manifest). Read-only for tests."""
    out = tmp_path_factory.mktemp("world")
    return out, simulate(SMALL_WORLD, out)


def basic(key: str) -> dict:
    """The HTTP Basic header an API key is sent with (the key as user name, no password), as Segment's."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def write_lines(path: Path, lines: list) -> Path:
    """Write JSON-able values (or raw bytes) one per line."""
    import orjson

    with open(path, "wb") as handle:
        for line in lines:
            handle.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``omnithread serve`` as a real process on a free loopback port, over ``data_dir``."""

    def __init__(self, data_dir: Path, env: dict | None = None, args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.args = args  # more words for ``serve`` (``--role collector``)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.env = env or {}
        self.ready_statuses = (200,)  # (200, 503) for a server expected to start degraded

    def start(self) -> "Server":
        env = dict(os.environ, OMNITHREAD_DATA_DIR=str(self.data_dir), **self.env)
        env.pop("OMNITHREAD_SECRET", None)
        self.output = tempfile.TemporaryFile()  # what the server prints, read by tests (a pipe could fill up)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from omnithread.cli.main import app; app()", "serve", "--port", str(self.port)]
            + list(self.args),
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code in self.ready_statuses:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not start: " + self.printed())

    def printed(self) -> str:
        """Everything the server has printed so far."""
        self.output.seek(0)
        return self.output.read().decode(errors="replace")

    def peak_memory_mb(self) -> float:
        """The server process's peak resident memory (VmHWM)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class RedisServer:
    """Debian's ``redis-server`` as a real process on a free loopback port, keeping its append-only file in
    ``directory`` (fsynced at every write unless ``fsync`` says otherwise); restartable on the same port."""

    def __init__(self, directory: Path, fsync: str = "always"):
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        self.directory, self.fsync = directory, fsync
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
            + ["--appendonly", "yes", "--appendfsync", self.fsync, "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def files(self) -> bytes:
        """Every byte Redis has written to its directory."""
        return b"".join(f.read_bytes() for f in self.directory.rglob("*") if f.is_file())

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# -- builders of calls, and the two import paths side by side, shared by the test modules --------------
JSON_COLUMNS = ("properties", "traits", "context", "consent", "extra")
CALL_TIME = "2026-09-01T10:00:00Z"


def identify(n, user, device, **traits):
    return {
        "type": "identify",
        "messageId": f"i{n}",
        "userId": user,
        "anonymousId": device,
        "traits": traits,
        "timestamp": CALL_TIME,
        "context": {"channel": "web"},
    }


def web_order(n, user, device, token):
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"o{n}",
        "userId": user,
        "anonymousId": device,
        "timestamp": CALL_TIME,
        "context": {"channel": "web"},
        "properties": {"order_id": f"W{n}", "products": [{"product_id": "P1"}], "payment_token": token},
    }


def till_order(n, session, card=None, token=None):
    props = {"order_id": f"T{n}", "products": [{"product_id": "P2"}], "total": 10.0}
    props.update({k: v for k, v in (("loyalty_card", card), ("payment_token", token)) if v})
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"t{n}",
        "anonymousId": session,
        "timestamp": CALL_TIME,
        "context": {"channel": "store", "store_id": "S1"},
        "properties": props,
    }


def track(n: int, **extra) -> dict:
    return {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": f"anon-{n}",
        "messageId": f"m-{n}",
        "properties": {"product_id": f"P{n % 7}"},
        "context": {"channel": "web"},
        **extra,
    }


def snapshot(ws: Workspace) -> tuple[dict, dict]:
    events = {}
    for row in ws.engine.rows("SELECT * FROM events"):
        for column in JSON_COLUMNS:  # encrypted values compared by what they hold (each encryption differs)
            row[column] = (
                reveal_encrypted_values(orjson.loads(row[column]), ws.cipher) if row[column] is not None else None
            )
        loaded = row.pop("loaded_at")
        for column in ("received_at", "event_at"):  # "now" differs between the two runs
            if row[column] == loaded:
                row[column] = "loaded_at"
        events[row["message_id"]] = row
    rejected = {r["rejected_id"]: (r["reason_codes"], r["source"]) for r in ws.log.rejected(status=None)}
    return events, rejected


def both_paths(tmp_path: Path, settings, sources: list[Path]):
    snapshots = []
    for fast in (True, False):
        with Workspace(settings.with_(data_dir=tmp_path / f"fast-{fast}", fast_path=fast)) as ws:
            ws.ingestor().ingest_paths(sources)
            snapshots.append(snapshot(ws))
    return snapshots


def assert_same(fast, python):
    (fast_events, fast_rejected), (py_events, py_rejected) = fast, python
    assert fast_events.keys() == py_events.keys()
    for message_id, row in py_events.items():
        assert fast_events[message_id] == row, message_id
    assert fast_rejected == py_rejected
