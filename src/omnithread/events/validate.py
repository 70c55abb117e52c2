"""Validation of one Segment-style payload against the schema.

``validate_event`` checks the shape of a call (type, ids, timestamps, channel) and,
for events omnithread knows, their properties; it reports every problem at once.
It never touches identifier values: pseudonymising them is the privacy stage's
job, done on the same dict before anything is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from omnithread.errors import Problem
from omnithread.events.schema import (
    CALLS,
    CHANNEL_ALIASES,
    CHANNELS,
    EVENT_SCHEMAS,
    PRODUCT_FIELDS,
    FieldSpec,
)

__all__ = [
    "EventTimes",
    "validate_event",
    "parse_timestamp",
    "resolve_times",
    "TimePolicy",
    "show",
    "nesting_depth",
    "TimeOps",
    "event_time",
]

UTC = timezone.utc
_MAX_ID_CHARS = 256
_MAX_EVENT_NAME_CHARS = 200


def show(value: object, limit: int = 60) -> str:
    """A short, quoted rendering of a value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nesting_depth(value: object, stop: int | None = None) -> int:
    """How many objects and arrays deep ``value`` nests (a scalar is 0), found without recursion; counting
    stops past ``stop``.

    >>> nesting_depth({"a": [1, {"b": {}}]})
    4
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[object]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if stop is not None and deepest > stop:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


class TimePolicy:
    """Which event times are plausible: not before ``earliest``, not past ``max_ahead``."""

    def __init__(self, earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC), max_ahead: timedelta = timedelta(days=1)):
        self.earliest = earliest
        self.max_ahead = max_ahead


_DEFAULT_POLICY = TimePolicy()


def parse_timestamp(value: object, field: str, problems: list[Problem]) -> datetime | None:
    """Parse an ISO 8601 timestamp (naive means UTC); record a problem if it is not one."""
    if value is None:
        return None
    if type(value) is str and value[-1:] == "Z":  # the common case, without the general conversion
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    problems.append(
        Problem("invalid_timestamp", field, show(value), f"{field}: {show(value)} is not an ISO 8601 timestamp")
    )
    return None


class TimeOps(Protocol):
    """What :func:`event_time` is written in: Python's values here (``_PYTHON_TIMES``), SQL text in the fast
    path (``omnithread.ingest.bulk``), so the rule has one definition both follow."""

    def known(self, *values: Any) -> Any: ...  # all of them are given
    def minus(self, a: Any, b: Any) -> Any: ...
    def first(self, *values: Any) -> Any: ...  # the first given
    def choose(self, condition: Any, then: Callable[[], Any], otherwise: Callable[[], Any]) -> Any: ...


def event_time(device: Any, sent: Any, received: Any, fallback: Any, ops: TimeOps) -> Any:
    """When an event happened: Segment's clock-skew correction. The device's clock (``originalTimestamp``, else
    ``timestamp``) is off by ``sentAt`` minus the time the server received the call, so the event moves by the
    same amount; without all three, the first of the device's time, the receive time and ``fallback``."""
    return ops.choose(
        ops.known(device, sent, received),
        lambda: ops.minus(received, ops.minus(sent, device)),
        lambda: ops.first(device, received, fallback),
    )


class _PythonTimes:
    def known(self, *values: Any) -> bool:
        return all(v is not None for v in values)

    def minus(self, a: Any, b: Any) -> Any:
        return a - b

    def first(self, *values: Any) -> Any:
        return next((v for v in values if v is not None), None)

    def choose(self, condition: Any, then: Callable[[], Any], otherwise: Callable[[], Any]) -> Any:
        return then() if condition else otherwise()


_PYTHON_TIMES = _PythonTimes()


class EventTimes:
    """The times of one event: when it happened (skew-corrected) and when it arrived."""

    __slots__ = ("event_at", "original_at", "sent_at", "received_at")

    def __init__(self, event_at, original_at, sent_at, received_at):
        self.event_at, self.original_at, self.sent_at, self.received_at = event_at, original_at, sent_at, received_at


def resolve_times(
    original_raw: object,
    stamped_raw: object,
    sent_raw: object,
    received_raw: object,
    received_at: datetime | None,
    now: datetime,
    policy: TimePolicy,
    problems: list[Problem],
) -> EventTimes:
    """The event's times from its four timestamp fields, skew-corrected; problems appended."""
    original = parse_timestamp(original_raw, "originalTimestamp", problems)
    stamped = parse_timestamp(stamped_raw, "timestamp", problems)
    sent = parse_timestamp(sent_raw, "sentAt", problems)
    received = parse_timestamp(received_raw, "receivedAt", problems) or received_at
    device_time = original or stamped
    try:
        event_at = event_time(device_time, sent, received, now, _PYTHON_TIMES)
    except OverflowError:  # a device clock off by millennia: the correction leaves the calendar
        assert device_time is not None and sent is not None and received is not None  # (only they subtract)
        field = "originalTimestamp" if original is not None else "timestamp"
        problems.append(
            Problem(
                "implausible_timestamp",
                field,
                device_time.isoformat(),
                f"{field}: {device_time.isoformat()} is so far from sentAt ({sent.isoformat()}) "
                "that the clock-skew correction leaves the calendar",
            )
        )
        event_at = received
    reference = received or now
    if event_at > reference + policy.max_ahead:
        field = "originalTimestamp" if original is not None else "timestamp"
        problems.append(
            Problem(
                "future_timestamp",
                field,
                event_at.isoformat(),
                f"{field}: event time {event_at.isoformat()} is more than {policy.max_ahead} after "
                f"it was received ({reference.isoformat()})",
            )
        )
    elif event_at < policy.earliest:
        field = "originalTimestamp" if original is not None else "timestamp"
        problems.append(
            Problem(
                "implausible_timestamp",
                field,
                event_at.isoformat(),
                f"{field}: event time {event_at.isoformat()} is before {policy.earliest.date().isoformat()}",
            )
        )
    return EventTimes(event_at, device_time, sent, received or now)


def _check_id(payload: dict, key: str, problems: list[Problem]) -> str | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # as Segment's libraries do with numeric ids
        payload[key] = value
    if not isinstance(value, str):
        problems.append(
            Problem(
                "invalid_type", key, show(value), f"{key}: {show(value)} must be a string, not {type(value).__name__}"
            )
        )
        return None
    if len(value) > _MAX_ID_CHARS:
        problems.append(
            Problem("too_long", key, show(value), f"{key}: {len(value)} characters, at most {_MAX_ID_CHARS} allowed")
        )
        return None
    return value


def _check_object(payload: dict, key: str, problems: list[Problem]) -> dict:
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(
            Problem(
                "invalid_type", key, show(value), f"{key}: {show(value)} must be an object, not {type(value).__name__}"
            )
        )
        return {}
    return value


_TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer()),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "products": lambda v: isinstance(v, list),
    "identifier": lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
}
_TYPE_WORDS = {
    "products": "an array of products",
    "object": "an object",
    "integer": "an integer",
    "identifier": "a string",
    "boolean": "a boolean",
    "number": "a number",
    "string": "a string",
}


def _check_fields(values: dict, specs: dict[str, FieldSpec], prefix: str, problems: list[Problem]) -> None:
    for name, spec in specs.items():
        value = values.get(name)
        field = f"{prefix}.{name}"
        if spec.required_unless is not None and value in (None, ""):
            other, exempt = spec.required_unless
            if values.get(other) not in (None, exempt):
                message = f"{field} is required when {other} is {show(values[other])}"
                problems.append(Problem("missing_field", field, "", message))
                continue
        if value is None:
            if spec.required:
                problems.append(Problem("missing_field", field, "", f"{field} is required"))
            continue
        if not _TYPE_CHECKS[spec.type](value):
            problems.append(
                Problem(
                    "invalid_type",
                    field,
                    show(value),
                    f"{field}: {show(value)} must be {_TYPE_WORDS[spec.type]}, not {type(value).__name__}",
                )
            )
            continue
        if spec.minimum is not None and spec.type in ("number", "integer") and value < spec.minimum:
            problems.append(
                Problem(
                    "out_of_range", field, show(value), f"{field}: {show(value)} is below the minimum {spec.minimum:,}"
                )
            )
        elif spec.maximum is not None and spec.type in ("number", "integer") and value > spec.maximum:
            problems.append(
                Problem(
                    "out_of_range", field, show(value), f"{field}: {show(value)} is above the maximum {spec.maximum:,}"
                )
            )
        elif spec.choices is not None and value not in spec.choices:
            problems.append(
                Problem(
                    "invalid_choice",
                    field,
                    show(value),
                    f"{field}: {show(value)} is not one of {', '.join(spec.choices)}",
                )
            )
        elif spec.values is not None:
            for key, given in value.items():
                if not _TYPE_CHECKS[spec.values](given):
                    item_field = f"{field}.{key}"
                    message = f"{item_field}: {show(given)} must be {_TYPE_WORDS[spec.values]}"
                    problems.append(Problem("invalid_type", item_field, show(given), message))
        elif spec.type == "products":
            for i, item in enumerate(value):
                item_field = f"{field}[{i}]"
                if not isinstance(item, dict):
                    problems.append(
                        Problem("invalid_type", item_field, show(item), f"{item_field}: {show(item)} must be an object")
                    )
                else:
                    _check_fields(item, PRODUCT_FIELDS, item_field, problems)


def _check_named_event(name: str, properties: dict, context: dict, problems: list[Problem]) -> int | None:
    schema = EVENT_SCHEMAS.get(name)
    if schema is None:
        return None
    if schema.requires_store and "store_id" not in properties and context.get("store_id"):
        properties["store_id"] = context["store_id"]
    _check_fields(properties, schema.properties, "properties", problems)
    return schema.version


class CheckedEvent:
    """What validation learnt about a payload, ready for the log."""

    __slots__ = ("call", "name", "user_id", "anonymous_id", "channel", "store_id", "times", "schema_version")

    def __init__(self, call, name, user_id, anonymous_id, channel, store_id, times, schema_version):
        self.call, self.name, self.user_id, self.anonymous_id = call, name, user_id, anonymous_id
        self.channel, self.store_id, self.times, self.schema_version = channel, store_id, times, schema_version


def validate_event(
    payload: dict,
    now: datetime,
    received_at: datetime | None = None,
    policy: TimePolicy = _DEFAULT_POLICY,
) -> tuple[CheckedEvent | None, list[Problem]]:
    """Check one call; return what it says and every problem found.

    ``received_at`` is the time a live collector received the payload; a file
    import passes ``None`` and the payload's own ``receivedAt`` (if any) is used.

    >>> from datetime import datetime, timezone
    >>> now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    >>> checked, problems = validate_event({"type": "track", "event": "Signed Up", "userId": "u1"}, now)
    >>> checked.name, problems
    ('Signed Up', [])
    >>> validate_event({"type": "track", "event": "x"}, now)[1][0].code
    'missing_identity'
    """
    problems: list[Problem] = []
    call = payload.get("type")
    if call not in CALLS:
        code = "missing_field" if call is None else "unknown_call"
        problems.append(
            Problem(code, "type", show(call), f"type: {show(call)} is not a call type ({', '.join(CALLS)})")
        )
    user_id = _check_id(payload, "userId", problems)
    anonymous_id = _check_id(payload, "anonymousId", problems)
    if user_id is None and anonymous_id is None and not any(p.field in ("userId", "anonymousId") for p in problems):
        problems.append(Problem("missing_identity", "userId", "", "userId or anonymousId is required"))
    message_id = payload.get("messageId")
    if message_id is not None and (
        not isinstance(message_id, str) or not message_id or len(message_id) > _MAX_ID_CHARS
    ):
        problems.append(
            Problem(
                "invalid_type",
                "messageId",
                show(message_id),
                f"messageId: {show(message_id)} must be a non-empty string of at most {_MAX_ID_CHARS} characters",
            )
        )
    context = _check_object(payload, "context", problems)
    properties = _check_object(payload, "properties", problems)
    _check_object(payload, "traits", problems)
    name = None
    schema_version = None
    # checked on every call that carries them (they are stored as strings), required on alias and group
    previous_id = _check_id(payload, "previousId", problems)
    group_id = _check_id(payload, "groupId", problems)
    if call == "track":
        name = payload.get("event")
        if not isinstance(name, str) or not name.strip() or len(name) > _MAX_EVENT_NAME_CHARS:
            problems.append(
                Problem(
                    "invalid_event_name",
                    "event",
                    show(name),
                    f"event: {show(name)} must be a non-empty string of at most {_MAX_EVENT_NAME_CHARS} characters",
                )
            )
            name = None
        else:
            schema_version = _check_named_event(name, properties, context, problems)
    elif call in ("page", "screen"):
        name = payload.get("name")
        if name is not None and not isinstance(name, str):
            problems.append(Problem("invalid_type", "name", show(name), f"name: {show(name)} must be a string"))
            name = None
    elif call == "alias":
        if previous_id is None and not any(p.field == "previousId" for p in problems):
            problems.append(Problem("missing_field", "previousId", "", "previousId is required for alias"))
        if user_id is None:
            problems.append(Problem("missing_field", "userId", "", "userId is required for alias"))
    elif call == "group":
        if group_id is None and not any(p.field == "groupId" for p in problems):
            problems.append(Problem("missing_field", "groupId", "", "groupId is required for group"))
    channel = context.get("channel")
    if channel is not None:
        channel = CHANNEL_ALIASES.get(channel, channel) if isinstance(channel, str) else channel
        if channel not in CHANNELS:
            problems.append(
                Problem(
                    "invalid_choice",
                    "context.channel",
                    show(channel),
                    f"context.channel: {show(channel)} is not one of {', '.join(CHANNELS)}",
                )
            )
            channel = None
    schema = EVENT_SCHEMAS.get(name) if call == "track" and name is not None else None
    if channel is None and schema is not None and schema.requires_store:
        channel = "store"
    store_id = context.get("store_id") or properties.get("store_id")
    if store_id is not None and not isinstance(store_id, str):
        problems.append(
            Problem(
                "invalid_type",
                "context.store_id",
                show(store_id),
                f"context.store_id: {show(store_id)} must be a string",
            )
        )
        store_id = None
    if channel == "store" and not store_id:
        problems.append(
            Problem(
                "missing_field", "context.store_id", "", "context.store_id is required when context.channel is 'store'"
            )
        )
    times = resolve_times(
        payload.get("originalTimestamp"),
        payload.get("timestamp"),
        payload.get("sentAt"),
        payload.get("receivedAt"),
        received_at,
        now,
        policy,
        problems,
    )
    if problems:
        return None, problems
    return CheckedEvent(call, name, user_id, anonymous_id, channel, store_id, times, schema_version), problems
