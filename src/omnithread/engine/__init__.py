"""Where tables live and where set-based work runs.

``open_engine(settings)`` picks the engine named in the settings; engines are
loaded lazily, so an engine whose packages are missing fails only when asked for.
"""

from __future__ import annotations

from importlib import import_module

from omnithread.config import Settings
from omnithread.engine.base import Engine
from omnithread.engine.log import EventLog
from omnithread.errors import ConfigError

__all__ = ["Engine", "EventLog", "open_engine", "scratch_engine", "ENGINES"]

# Short name -> "module:Class"; a dotted path to a class of one's own also works.
ENGINES = {"duckdb": "omnithread.engine.duckdb:DuckDBEngine", "spark": "omnithread.engine.spark:SparkEngine"}


def open_engine(settings: Settings) -> Engine:
    """Open the engine the settings name, over the settings' data directory."""
    target = ENGINES.get(settings.engine, settings.engine)
    if ":" not in target:
        raise ConfigError("engine", settings.engine, f"one of {', '.join(ENGINES)} or 'package.module:Class'")
    module_name, class_name = target.split(":", 1)
    try:
        engine_class = getattr(import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError("engine", settings.engine, f"an importable engine ({error})") from None
    if settings.memory_limit:
        return engine_class(settings.database_path, memory_limit=settings.memory_limit)
    return engine_class(settings.database_path)


def scratch_engine() -> Engine:
    """An engine of its own in memory, for set-based work over tables handed to it (probabilistic linkage over
    a batch of records): nothing of it reaches the data directory, and no stage opens a connection itself."""
    module_name, class_name = ENGINES["duckdb"].split(":", 1)
    return getattr(import_module(module_name), class_name)(":memory:")
