"""Running the command line's own commands inside a server process, for jobs.

A running server holds the data directory's event log (its engine allows one process), so a command started
while it runs is handed to it (``omnithread.cli.forward``) and run here, in the server's process, by the very
code that runs it without a server: the output, the ``--json`` object and the exit code are the same by
construction. What a command prints is caught per thread (the server's own threads keep printing where they
did), so a job's output goes back to whoever asked for it.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable
from typing import Any

import typer

from omnithread.api.jobs import Job, JobOutcome

__all__ = ["capture_streams", "run_command", "command_of", "has_data_dir"]

_local = threading.local()


class _PerThread(io.TextIOBase):
    """A standard stream that writes to this thread's capture where it has one, else to the real stream."""

    def __init__(self, real, slot: str):
        self._real, self._slot = real, slot

    def _target(self):
        return getattr(_local, self._slot, None) or self._real

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        return self._real.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._real, "encoding", "utf-8")


def capture_streams() -> None:
    """Route ``sys.stdout`` and ``sys.stderr`` through per-thread captures (once per process)."""
    if not isinstance(sys.stdout, _PerThread):
        sys.stdout = _PerThread(sys.stdout, "out")
    if not isinstance(sys.stderr, _PerThread):
        sys.stderr = _PerThread(sys.stderr, "err")


def _is_group(command) -> bool:
    return hasattr(command, "get_command") and hasattr(command, "list_commands")


def command_of(app: typer.Typer, argv: list[str]) -> tuple[list[str], Any]:
    """The names of the (sub)command ``argv`` runs and its command object (None where it names none)."""
    command: Any = typer.main.get_command(app)
    names: list[str] = []
    for token in argv:
        if token.startswith("-") or not _is_group(command):
            break
        sub = command.get_command(None, token)
        if sub is None:
            return names, None
        names.append(token)
        command = sub
    return names, (None if _is_group(command) else command)


def has_data_dir(command: Any) -> bool:
    return command is not None and any(p.name == "data_dir" for p in command.params)


def _exit_code(error: Exception, report_error: Callable[[BaseException], int | None], err: io.StringIO) -> int:
    """The exit code the console script gives for ``error``, said where it says it (the command line's own
    exceptions are known by what they carry: its parser is vendored inside typer)."""
    reported = report_error(error)
    if reported is not None:
        return reported
    if hasattr(error, "exit_code") and hasattr(error, "show"):  # a usage error
        error.show(file=err)
        return int(error.exit_code)
    if hasattr(error, "exit_code"):  # an exit with a code
        return int(error.exit_code)
    if type(error).__name__ == "Abort":
        return 1
    raise error


def run_command(
    app: typer.Typer, report_error: Callable[[BaseException], int | None], job: Job, columns: int | None = None
) -> JobOutcome:
    """Run ``job.argv`` as ``omnithread`` would, printing into captures; its exit code and what it printed.

    ``report_error`` prints an error the way the console script does and gives its exit code (None for an
    error it does not know, which then propagates)."""
    columns = columns or job.columns
    out, err = io.StringIO(), io.StringIO()
    _local.out, _local.err = out, err
    from omnithread.cli import main as cli  # (the module that defines the commands; imported once, then cached)

    widths = (cli.console._width, cli.err._width)  # (None: the console's own, from the terminal)
    if columns:
        cli.console.width = cli.err.width = columns
    try:
        try:
            result = typer.main.get_command(app).main(args=job.argv, prog_name="omnithread", standalone_mode=False)
            code = result if isinstance(result, int) else 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except Exception as error:  # noqa: BLE001 - said as the console script says it, or raised on
            code = _exit_code(error, report_error, err)
    finally:
        _local.out = _local.err = None
        cli.console._width, cli.err._width = widths
    return JobOutcome(code, out.getvalue(), err.getvalue())
