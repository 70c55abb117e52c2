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

__all__ = ["Settings", "DEFAULT_DATA_DIR"]

DEFAULT_DATA_DIR = Path("omnithread-data")


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, "a number") from None
    if value <= 0:
        raise ConfigError(name, raw, "a number above 0")
    return value


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

    @classmethod
    def from_env(cls, data_dir: Path | str | None = None, **overrides) -> "Settings":
        env = os.environ
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
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "omnithread.duckdb"
