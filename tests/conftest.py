"""Shared fixtures: throwaway data directories and one small simulated retailer with its truth."""

from __future__ import annotations

from pathlib import Path

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
