"""Handing a command to the server that runs on its data directory.

The embedded engine lets one process hold the event log, and a running server holds it all day. So while
``omnithread serve`` runs, it leaves ``server.json`` in the data directory (its process id, its address and
a token made for that run; readable by the directory's owner only), and any other command on that directory
is sent to it as a job: the server runs the same command in its own process (``omnithread.cli.inprocess``),
and this side prints what it printed and exits with its exit code. Whoever can read the data directory can
already do anything to it, so the token gives nothing more. Without a server, or with one that died without
removing its file, commands run here as always.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from omnithread.api.jobs import CONTROL_HEADER
from omnithread.errors import UnavailableError

__all__ = ["SERVER_FILE", "running_server", "forward", "write_server_file", "path_arguments"]

SERVER_FILE = "server.json"
_NOT_FORWARDED = {("serve",), ("jobs",)}  # the server itself; jobs read jobs.sqlite, which any process may


def write_server_file(data_dir: Path, url: str, token: str) -> Path:
    """Announce a running server on ``data_dir`` (removed when it stops)."""
    path = data_dir / SERVER_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": os.getpid(), "url": url, "token": token}, handle)
    return path


def running_server(data_dir: Path) -> dict | None:
    """The server that announced itself on ``data_dir``, if its process still runs."""
    try:
        server = json.loads((data_dir / SERVER_FILE).read_text())
        os.kill(int(server["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return server


def _data_dir(argv: list[str]) -> Path:
    for i, token in enumerate(argv):
        if token == "--data-dir" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if token.startswith("--data-dir="):
            return Path(token.split("=", 1)[1])
    from omnithread.config import DEFAULT_DATA_DIR

    return Path(os.environ.get("OMNITHREAD_DATA_DIR") or DEFAULT_DATA_DIR)


def _annotation(param) -> str:
    """What a parameter is declared as, in words (typer keeps the declaration; its vendored parser, no type)."""
    described = getattr(param, "type_descriptor", None)
    return str(getattr(described, "annotation", getattr(param, "type", "")))


def _is_path(param) -> bool:
    return "Path" in _annotation(param)


def _is_flag(param) -> bool:
    return bool(getattr(param, "is_flag", False)) or _annotation(param) in ("<class 'bool'>", "bool")


def path_arguments(command, argv: list[str]) -> list[str]:
    """``argv`` with every value of a path option or argument made absolute (the server's working directory
    is not this one's)."""
    options = [p for p in command.params if p.param_type_name == "option"]
    path_options = {name for p in options if _is_path(p) for name in p.opts}
    valued = {name for p in options if not _is_flag(p) for name in [*p.opts, *p.secondary_opts]}
    paths_positional = any(p.param_type_name == "argument" and _is_path(p) for p in command.params)
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and "=" in token:
            name, value = token.split("=", 1)
            out.append(f"{name}={os.path.abspath(value)}" if name in path_options else token)
        elif token in path_options and i + 1 < len(argv):
            out += [token, os.path.abspath(argv[i + 1])]
            i += 1
        elif token in valued and i + 1 < len(argv):
            out += [token, argv[i + 1]]
            i += 1
        elif not token.startswith("-") and paths_positional:
            out.append(os.path.abspath(token))
        else:
            out.append(token)
        i += 1
    return out


def _call(server: dict, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        server["url"].rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={CONTROL_HEADER: server["token"], "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        detail = refused.read().decode("utf-8", "replace")[:300]
        raise UnavailableError(
            f"the server at {server['url']} refused the command ({refused.code}): {detail}"
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise UnavailableError(
            f"a server runs on this data directory (process {server['pid']}) but does not answer at "
            f"{server['url']}: {getattr(error, 'reason', error)}"
        ) from None


def forward(names: list[str], command, argv: list[str], columns: int) -> int | None:
    """Run ``argv`` (the command ``names``) on the server of its data directory and print what it printed;
    its exit code, or None when no server runs there (the caller then runs the command itself)."""
    if tuple(names) in _NOT_FORWARDED or "--help" in argv:
        return None
    data_dir = _data_dir(argv).resolve()
    server = running_server(data_dir)
    if server is None:
        return None
    job_argv = [*names, *path_arguments(command, argv[len(names) :])]
    if "--data-dir" not in job_argv and not any(t.startswith("--data-dir=") for t in job_argv):
        job_argv += ["--data-dir", str(data_dir)]
    job = _call(server, "POST", "/v1/jobs", {"command": names, "argv": job_argv, "columns": columns})
    said_waiting = False
    try:
        while True:
            job = _call(server, "GET", f"/v1/jobs/{job['job_id']}")
            if job["state"] in ("done", "failed"):
                break
            if job["state"] == "queued" and not said_waiting:
                sys.stderr.write(f"(queued behind the server's running job; {job['job_id']})\n")
                said_waiting = True
            time.sleep(0.1)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{job['job_id']} goes on in the server: see `omnithread jobs`\n")
        return 130
    sys.stdout.write(job.get("stdout") or "")
    sys.stderr.write(job.get("stderr") or "")
    if job.get("error"):
        sys.stderr.write(f"error: the job failed: {job['error']}\n")
    return int(job["exit_code"] if job["exit_code"] is not None else 1)
