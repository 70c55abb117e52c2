"""Settings, passed down explicitly from the edges; nothing here is global.

Every setting can come from the environment (``OMNITHREAD_*``) or be given by the
caller; the CLI's ``--data-dir`` wins over ``OMNITHREAD_DATA_DIR``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from omnithread.errors import ConfigError

__all__ = ["Settings", "DEFAULT_DATA_DIR", "settings_file", "FILE_SETTINGS"]

DEFAULT_DATA_DIR = Path("omnithread-data")


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, "a number") from None
    if value <= 0:
        raise ConfigError(name, raw, "a number above 0")
    return value


# what a running server does by itself: each from OMNITHREAD_<NAME>; numbers are at least 0 (0: off)
_SERVER_SETTINGS = {
    "refresh_seconds": float,
    "retrain_events": int,
    "retrain_hours": float,
    "retrain_min_minutes": float,
    "drop_dir": Path,
    "drop_settle_seconds": float,
    "stop_seconds": float,
}


def _setting(name: str, raw: object, kind: type) -> object:
    if kind is Path:
        return Path(str(raw))
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(name, raw, "a whole number" if kind is int else "a number") from None
    if value < 0 or value != value:
        raise ConfigError(name, raw, "a number of at least 0 (0 turns it off)")
    return value


# the settings a file may hold, each as OMNITHREAD_<NAME> says it in the environment
FILE_SETTINGS = (
    "data_dir",
    "engine",
    "phone_region",
    "max_future_hours",
    "request_timeout",
    "ip_mode",
    "memory_limit",
    "import_chunk_mb",
    "broker",
    "broker_stream",
    *_SERVER_SETTINGS,
)


def settings_file(path: Path) -> dict[str, str]:
    """A TOML settings file as the environment variables it stands for (``refresh_seconds = 5`` is
    ``OMNITHREAD_REFRESH_SECONDS=5``); an unknown name or a table is refused, naming it."""
    import tomllib

    try:
        loaded = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError("OMNITHREAD_CONFIG", str(path), f"a readable settings file ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("OMNITHREAD_CONFIG", str(path), f"a TOML file ({error})") from None
    values = {}
    for name, value in loaded.items():
        if name not in FILE_SETTINGS:
            raise ConfigError(name, value, f"a setting among {', '.join(FILE_SETTINGS)}")
        if isinstance(value, (dict, list)):
            raise ConfigError(name, value, "a single value")
        if value == "":
            continue  # the default
        values["OMNITHREAD_" + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return values


@dataclass(frozen=True)
class Settings:
    """Where data lives and how input is judged.

    ``engine`` names the engine (``duckdb``); ``phone_region`` is the region used
    to read phone numbers written without a country code; ``max_future`` is how
    far ahead of its receipt an event may claim to have happened; ``memory_limit`` caps the
    memory the engine may take before it spills to disk (``6GB``, ``512MB``; the engine's own
    default when unset); ``import_chunk_bytes`` is how much of a file the import hands the engine
    at once: larger chunks import faster (each costs a fixed ~0.6 s to plan and write) and hold
    more memory (one million events: 64 MB 13.1 s / 0.9 GB peak, 128 MB 9.8-10.1 s / 1.1 GB,
    256 MB 9.3-9.7 s / 1.4 GB); ``ip_mode`` is what becomes of an IP address in a payload: ``truncate``
    (IPv4 to its /24, IPv6 to its /48: enough for a region, not a household) or ``hash`` (a keyed hash:
    equal addresses stay equal, none can be read back); ``request_timeout`` is how long the server gives
    each request to arrive whole before it answers 408 and closes the connection.

    What a running server does by itself (0 turns each off): ``refresh_seconds``, how often it folds new
    events into persons and profiles; ``retrain_events`` and ``retrain_hours``, after how many new events or
    how long it trains the recommendation model again (whichever comes first; new events make it due no
    more often than every ``retrain_min_minutes``, so a heavy load does not keep it training);
    ``drop_dir``, the folder it imports files dropped into (``<data_dir>/drop`` unless set), each once a file
    has not changed for ``drop_settle_seconds``; ``stop_seconds``, how long a stopping server waits for a
    running job.

    ``broker`` (a Redis address, ``redis://host:6379/0``; none by default) puts a durable broker between
    collectors and the log: ``serve --role collector`` processes append to its stream ``broker_stream`` and
    the server that owns the data directory loads it (``docs/scale.md``).
    """

    data_dir: Path = DEFAULT_DATA_DIR
    engine: str = "duckdb"
    phone_region: str = "GB"
    max_future: timedelta = timedelta(days=1)
    chunk_rows: int = 50_000
    fast_path: bool = True
    memory_limit: str | None = None
    import_chunk_bytes: int = 256 << 20
    ip_mode: str = "truncate"
    request_timeout: float = 15.0
    refresh_seconds: float = 5.0
    retrain_events: int = 1_000_000
    retrain_hours: float = 24.0
    retrain_min_minutes: float = 10.0
    drop_dir: Path | None = None
    drop_settle_seconds: float = 2.0
    stop_seconds: float = 30.0
    broker: str | None = None
    broker_stream: str = "omnithread:events"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not isinstance(self.import_chunk_bytes, int) or self.import_chunk_bytes < 1024:
            raise ConfigError("import_chunk_bytes", self.import_chunk_bytes, "a number of bytes of at least 1024")
        if self.ip_mode not in ("truncate", "hash"):
            raise ConfigError("ip_mode", self.ip_mode, "truncate (IPv4 to its /24, IPv6 to its /48) or hash (keyed)")
        if self.memory_limit is not None and not re.fullmatch(
            r"\d+(\.\d+)?\s*(KB|MB|GB|TB)", self.memory_limit.upper()
        ):
            raise ConfigError("memory_limit", self.memory_limit, "an amount such as 6GB or 512MB")
        if self.broker is not None and not re.match(r"(redis|rediss|unix)://", self.broker):
            shown = self.broker.split("@")[-1]  # never a password in an error
            raise ConfigError("broker", shown, "a Redis address: redis://host:port/db, rediss://... or unix://path")

    @classmethod
    def from_env(cls, data_dir: Path | str | None = None, **overrides) -> "Settings":
        """The settings from, in rising order, the settings file ``OMNITHREAD_CONFIG`` names (TOML, see
        ``docs/omnithread.example.toml``), the environment (``OMNITHREAD_<NAME>``) and the caller."""
        env = dict(os.environ)
        config = env.get("OMNITHREAD_CONFIG")
        if config:
            env = {**settings_file(Path(config)), **env}
        values: dict = {"data_dir": Path(data_dir or env.get("OMNITHREAD_DATA_DIR") or DEFAULT_DATA_DIR)}
        if "OMNITHREAD_ENGINE" in env:
            values["engine"] = env["OMNITHREAD_ENGINE"]
        if "OMNITHREAD_PHONE_REGION" in env:
            values["phone_region"] = env["OMNITHREAD_PHONE_REGION"].upper()
        if "OMNITHREAD_MAX_FUTURE_HOURS" in env:
            hours = _positive_float("OMNITHREAD_MAX_FUTURE_HOURS", env["OMNITHREAD_MAX_FUTURE_HOURS"])
            values["max_future"] = timedelta(hours=hours)
        if "OMNITHREAD_REQUEST_TIMEOUT" in env:
            values["request_timeout"] = _positive_float("OMNITHREAD_REQUEST_TIMEOUT", env["OMNITHREAD_REQUEST_TIMEOUT"])
        if "OMNITHREAD_IP_MODE" in env:
            values["ip_mode"] = env["OMNITHREAD_IP_MODE"].lower()
        if "OMNITHREAD_MEMORY_LIMIT" in env:
            values["memory_limit"] = env["OMNITHREAD_MEMORY_LIMIT"]
        if "OMNITHREAD_IMPORT_CHUNK_MB" in env:
            megabytes = _positive_float("OMNITHREAD_IMPORT_CHUNK_MB", env["OMNITHREAD_IMPORT_CHUNK_MB"])
            values["import_chunk_bytes"] = max(1024, int(megabytes * (1 << 20)))
        for name in ("broker", "broker_stream"):
            if env.get("OMNITHREAD_" + name.upper()):
                values[name] = env["OMNITHREAD_" + name.upper()]
        for name, kind in _SERVER_SETTINGS.items():
            raw = env.get("OMNITHREAD_" + name.upper())
            if raw is not None:
                values[name] = _setting(name, raw, kind)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @property
    def drop_path(self) -> Path:
        """The folder the server imports dropped files from."""
        return Path(self.drop_dir) if self.drop_dir else self.data_dir / "drop"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "omnithread.duckdb"
