"""Render the event schema as Markdown; ``docs/events.md`` is this output, kept in step by a test.

Run ``python -m omnithread.events.docs > docs/events.md`` after changing the schema.
"""

from __future__ import annotations

import sys

from omnithread.events.schema import (
    CALLS,
    CHANNEL_ALIASES,
    CHANNELS,
    COMMON_FIELDS,
    EVENT_SCHEMAS,
    IDENTIFIER_KEYS,
    MAX_BATCH_BYTES,
    MAX_COUNT,
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_MONEY,
    PRODUCT_FIELDS,
    FieldSpec,
)

__all__ = ["render_markdown"]


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


INTRO = """# Events

Every source speaks one schema: the [Segment Spec](https://segment.com/docs/connections/spec/) calls
({calls}) with their common fields, the e-commerce v2 events for every channel, and a few store and
identity events of omnithread's own, each with a version. Online and store events share names and are
told apart by `context.channel` ({channels}) and `context.store_id`, so one query reads both worlds.
Segment's own channel names are read as ours ({aliases}).

An event's name decides its schema: a listed event must match its properties below; a `track` event
with a name of the sender's own is accepted as it is. An event may be at most {event_kb} KB and a batch
at most {batch_kb} KB, and its objects and arrays may nest at most {depth} levels deep. Numbers of known
events have ranges (below): a count at most {count}, money at most {money}. Every event needs a `userId` or
an `anonymousId`. An event without a `messageId` gets one derived from a keyed digest of its content and of
where it came from (a file's line, the collector's moment of receipt), so a file imported again stores
nothing new while two identical calls sent a moment apart are two events, as Segment makes them.

**Direct identifiers are never stored in the clear.** The keys below, wherever they appear in `traits`,
`context.traits`, `context` or `properties`, hold the direct identifiers identity resolution reads: their
values are normalised (emails trimmed and lower-cased, phones in E.164, card numbers without spacing) and
replaced by a keyed HMAC-SHA256 such as `em_3f9a…`. Beyond them, the personal-data rule
(`docs/privacy.md`) finds identifiers wherever else they arrive: keys of any spelling at any depth, emails
and phone numbers inside any string or URL, ids that are emails or phones, IP addresses. Raw biometric data
(`palm_template`, `face_image`…) is refused: send the palm reader's token.

| key | identifier type |
|---|---|
{identifiers}

**Time.** `originalTimestamp` (or `timestamp`) is the device's clock; when `sentAt` and a receive time
are known, the event time is corrected for the device's clock skew as Segment does:
`event_at = receivedAt - (sentAt - originalTimestamp)`. The receive time is kept apart (`received_at`),
late events are accepted and placed by event time, and an event more than a day ahead of its receipt is
refused (`OMNITHREAD_MAX_FUTURE_HOURS`).
"""


def _type(spec: FieldSpec) -> str:
    words = {"products": "array of products", "identifier": "identifier (hashed)"}
    kind = words.get(spec.type, spec.type)
    if spec.choices:
        kind += ": " + ", ".join(f"`{c}`" for c in spec.choices)
    if spec.minimum is not None:
        kind += f", ≥ {_number(spec.minimum)}"
    if spec.maximum is not None:
        kind += f", ≤ {_number(spec.maximum)}"
    if spec.values:
        kind += f" of {spec.values}s"
    return kind


def _required(spec: FieldSpec) -> str:
    if spec.required_unless:
        return f"unless `{spec.required_unless[0]}` is `{spec.required_unless[1]}`"
    return "yes" if spec.required else ""


def _fields(fields: dict[str, FieldSpec]) -> str:
    rows = ["| property | type | required | meaning |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {_type(spec)} | {_required(spec)} | {spec.description} |" for name, spec in fields.items()]
    return "\n".join(rows)


def render_markdown() -> str:
    """The whole of ``docs/events.md``."""
    parts = [
        INTRO.format(
            calls=", ".join(f"`{c}`" for c in CALLS),
            channels=", ".join(f"`{c}`" for c in CHANNELS),
            aliases=", ".join(f"`{a}` → `{c}`" for a, c in CHANNEL_ALIASES.items()),
            event_kb=MAX_EVENT_BYTES // 1024,
            batch_kb=MAX_BATCH_BYTES // 1024,
            depth=MAX_DEPTH,
            count=f"{MAX_COUNT:,}",
            money=f"{MAX_MONEY:,}",
            identifiers="\n".join(f"| `{k}` | {v} |" for k, v in IDENTIFIER_KEYS.items()),
        )
    ]
    parts.append(
        "## Common fields\n\n| field | type | meaning |\n|---|---|---|\n"
        + "\n".join(f"| `{name}` | {kind} | {meaning} |" for name, kind, meaning in COMMON_FIELDS)
    )
    parts.append("## Product objects\n\nThe elements of a `products` array.\n\n" + _fields(PRODUCT_FIELDS))
    for origin, title in (
        ("ecommerce-v2", "E-commerce events (Segment e-commerce v2)"),
        ("omnithread", "Store and identity events (omnithread's own)"),
    ):
        parts.append(f"## {title}")
        for schema in EVENT_SCHEMAS.values():
            if schema.origin == origin:
                store = " Its channel is `store` unless it says otherwise." if schema.requires_store else ""
                parts.append(
                    f"### {schema.name} (version {schema.version})\n\n{schema.description}{store}\n\n"
                    + _fields(schema.properties)
                )
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render_markdown())
