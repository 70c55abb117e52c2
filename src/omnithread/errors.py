"""One root error and its families, by kind; each names the offending field and value.

The kinds, and the HTTP status each answers with (the edges read ``http_status`` and never map types by hand):

* invalid input, the caller's to fix (400): :class:`InvalidEventError` (an event, with every problem),
  :class:`InvalidRequestError` (a field of a request or a command's argument);
* not found (404): :class:`NotFoundError`;
* conflict with the stored state (409): :class:`ConflictError` (a model saved by another version);
* unavailable, try again later (503): :class:`UnavailableError` (a full disk, a locked or corrupt data
  directory, an audit log that cannot be written);
* configuration, the operator's to fix (500): :class:`ConfigError` (a setting), and :class:`NothingToTrainError`;
* the server's own failures (500): :class:`EngineError` (a statement failed), :class:`ErasureFailedError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "OmnithreadError",
    "Problem",
    "InvalidEventError",
    "ConfigError",
    "NotFoundError",
    "ConflictError",
    "EngineError",
    "InvalidRequestError",
    "NothingToTrainError",
    "ErasureFailedError",
    "UnavailableError",
    "safe_message",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason an input was refused.

    ``code`` is a stable machine name (``invalid_type``, ``missing_identity``...),
    ``field`` the dotted path of the offending field (empty for whole-input
    problems), ``value`` a display-safe rendering of the offending value (direct
    identifiers are masked) and ``message`` the sentence a person reads.
    """

    code: str
    field: str
    value: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "value": self.value, "message": self.message}

    def __str__(self) -> str:
        return self.message


class OmnithreadError(Exception):
    """Root of every error omnithread raises on purpose."""

    http_status = 500


class InvalidEventError(OmnithreadError):
    """An input failed validation; ``problems`` lists every reason at once."""

    http_status = 400

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in self.problems))


class ConfigError(OmnithreadError):
    """A setting has a value omnithread cannot use."""

    http_status = 500

    def __init__(self, setting: str, value: object, expected: str):
        self.setting, self.value, self.expected = setting, value, expected
        super().__init__(f"setting {setting}={value!r} is not valid: expected {expected}")


class NotFoundError(OmnithreadError):
    """A thing asked for by id does not exist."""

    http_status = 404

    def __init__(self, kind: str, key: object):
        self.kind, self.key = kind, key
        super().__init__(f"no {kind} with id {key!r}")


class ConflictError(OmnithreadError):
    """What is stored conflicts with the request (a model saved by another version of omnithread)."""

    http_status = 409

    def __init__(self, what: str, remedy: str):
        self.what, self.remedy = what, remedy
        super().__init__(f"{what}: {remedy}")


class EngineError(OmnithreadError):
    """A statement failed in the engine. It carries the statement (``sql``) and the engine's own error
    (``cause``) for whoever debugs it, but its message holds neither: the kind of failure with every quoted
    value masked, so an answer or a log line that shows it shows no one's data and no statement."""

    def __init__(self, sql: str, cause: Exception):
        self.sql, self.cause = sql, cause
        super().__init__(f"the engine failed: {safe_message(cause)}")


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidRequestError(OmnithreadError, ValueError):
    """A field of a request (an API body, a command's argument) has a value omnithread cannot use."""

    http_status = 400

    def __init__(self, field: str, value: object, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {_shown(value)} is not valid: expected {expected}")


class NothingToTrainError(ConfigError):
    """The log holds nothing a model could be trained on (yet)."""

    def __init__(self, what: str = "an event log with product interactions to train on"):
        super().__init__("events", 0, what)


class ErasureFailedError(OmnithreadError):
    """An erasure stopped part-way; everything it had done was undone, so nothing has changed."""

    http_status = 500

    def __init__(self, step: str, cause: BaseException):
        self.step, self.cause = step, cause
        super().__init__(
            f"the erasure failed while {step} and nothing was changed "
            f"({type(cause).__name__}); it can be asked for again"
        )


class UnavailableError(OmnithreadError):
    """Storage cannot take the request now (disk full, file unreadable); try again later."""

    http_status = 503

    def __init__(self, what: str):
        self.what = what
        super().__init__(what)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_LONG_NUMBERS = re.compile(r"\+?\d[\d .()-]{5,}\d")


def safe_message(error: BaseException, limit: int = 200) -> str:
    """An error's kind and the first line of its message with every quoted value, email and long number
    masked: what a log line or an answer may say of a failure without carrying anyone's data or a statement.

    >>> safe_message(ValueError("Could not convert string '2147483648' to INT32 for jane@example.org"))
    "ValueError: Could not convert string '…' to INT32 for …"
    """
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = _QUOTED.sub(lambda m: m.group(0)[0] + "…" + m.group(0)[0], text)
    text = re.sub(r"\S+@\S+", "…", _LONG_NUMBERS.sub("…", text))
    return f"{type(error).__name__}: {text[:limit]}"
