"""The installation secret behind every keyed hash and every encrypted payload.

It is created on first use as ``secret.key`` in the data directory (mode 0600), or
read from the ``OMNITHREAD_SECRET`` environment variable when one is set, so that
several processes or machines can share one. Separate keys are derived from it for
each use (HKDF), so a key for hashing identifiers never encrypts payloads.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from omnithread.errors import ConfigError

__all__ = ["Secret", "load_secret", "SECRET_ENV", "SECRET_FILE"]

SECRET_ENV = "OMNITHREAD_SECRET"
SECRET_FILE = "secret.key"
_MIN_SECRET_CHARS = 16


@dataclass(frozen=True)
class Secret:
    """Raw secret material with derived, purpose-bound keys."""

    material: bytes

    def derive(self, purpose: str, length: int = 32) -> bytes:
        """Return a key bound to ``purpose`` (HKDF-SHA256 over the secret)."""
        kdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=b"omnithread", info=purpose.encode())
        return kdf.derive(self.material)

    def fernet_key(self, purpose: str) -> bytes:
        return base64.urlsafe_b64encode(self.derive(purpose))


def load_secret(data_dir: Path) -> Secret:
    """Read the secret from the environment, or from (or into) ``data_dir``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> load_secret(d) == load_secret(d)
    True
    """
    from_env = os.environ.get(SECRET_ENV)
    if from_env is not None:
        if len(from_env) < _MIN_SECRET_CHARS:
            raise ConfigError(SECRET_ENV, "<hidden>", f"at least {_MIN_SECRET_CHARS} characters")
        return Secret(from_env.encode())
    path = Path(data_dir) / SECRET_FILE
    if path.exists():
        return Secret(bytes.fromhex(path.read_text().strip()))
    path.parent.mkdir(parents=True, exist_ok=True)
    material = secrets.token_bytes(32)
    # O_EXCL: two processes racing to create the secret must not both win.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Secret(bytes.fromhex(path.read_text().strip()))
    with os.fdopen(fd, "w") as handle:
        handle.write(material.hex())
    return Secret(material)
