"""Shared fixtures: throwaway data directories and one small simulated retailer with its truth."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from omnithread.config import Settings
from omnithread.sim import WorldConfig, simulate
from omnithread.workspace import Workspace

SMALL_WORLD = WorldConfig(people=400, days=20, holdout_days=5, products=200, seed=11, malformed_rate=0.01)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch) -> Settings:
    monkeypatch.delenv("OMNITHREAD_SECRET", raising=False)
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def workspace(settings: Settings):
    with Workspace(settings) as ws:
        yield ws


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> tuple[Path, dict]:
    """A small simulated retailer: (output folder, manifest). Read-only for tests."""
    out = tmp_path_factory.mktemp("world")
    return out, simulate(SMALL_WORLD, out)


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

    def __init__(self, data_dir: Path, env: dict | None = None):
        self.data_dir = data_dir
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
            [sys.executable, "-c", "from omnithread.cli.main import app; app()", "serve", "--port", str(self.port)],
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
