"""Settings from the environment reach the engine; bad values are refused by name."""

from __future__ import annotations

import pytest

from omnithread.config import Settings
from omnithread.errors import ConfigError
from omnithread.workspace import Workspace


def test_the_memory_limit_from_the_environment_caps_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNITHREAD_MEMORY_LIMIT", "512MB")
    settings = Settings.from_env(tmp_path / "data")
    assert settings.memory_limit == "512MB"
    with Workspace(settings) as ws:
        limit = ws.engine.scalar("SELECT current_setting('memory_limit')")
    assert limit == "488.2 MiB", limit  # 512 MB as DuckDB reports it


def test_a_memory_limit_that_is_not_an_amount_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError) as refused:
        Settings(data_dir=tmp_path, memory_limit="lots")
    assert "memory_limit" in str(refused.value) and "lots" in str(refused.value)
