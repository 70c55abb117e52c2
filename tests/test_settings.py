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


def test_the_import_chunk_size_from_the_environment_and_a_bad_one_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNITHREAD_IMPORT_CHUNK_MB", "32")
    assert Settings.from_env(tmp_path / "data").import_chunk_bytes == 32 << 20
    monkeypatch.setenv("OMNITHREAD_IMPORT_CHUNK_MB", "big")
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(tmp_path / "data")
    assert "OMNITHREAD_IMPORT_CHUNK_MB" in str(refused.value) and "big" in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        Settings(data_dir=tmp_path, import_chunk_bytes=10)
    assert "import_chunk_bytes" in str(refused.value)
