"""The data directory is private: the directory 0700, every file in it 0600.

It holds names, addresses, the audit log and, in a database file's free space, bytes of rows deleted not long
ago; nothing in it is for other users of the machine. Opening a data directory makes it so (for what is
already there) and sets the process's file-creation mask so that what is written next is private too.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_directory"]


def private_directory(path: Path | str) -> Path:
    """Create ``path`` (mode 0700) or make it private, with every file under it 0600 and every folder 0700
    (those this user owns), and set the process's umask to 077 for what is created later."""
    path = Path(path)
    os.umask(0o077)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    uid = os.geteuid()
    for folder, _dirs, files in os.walk(path):
        _chmod(Path(folder), 0o700, uid)
        for name in files:
            _chmod(Path(folder) / name, 0o600, uid)
    return path


def _chmod(target: Path, mode: int, uid: int) -> None:
    try:
        stat = target.lstat()
        if stat.st_uid == uid and (stat.st_mode & 0o777) != mode and not target.is_symlink():
            target.chmod(mode)
    except OSError:  # a read-only directory stays as it is: opening it reports what cannot be done
        pass
