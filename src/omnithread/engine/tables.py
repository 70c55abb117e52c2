"""The tables every engine holds, in logical types each engine maps to its own."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import NamedTuple

import orjson

from omnithread.events.schema import HASH_PATTERN, IDENTIFIER_CODES, IDENTIFIER_KEYS, MAX_COUNT, MAX_MONEY

__all__ = [
    "number_sql",
    "count_ok_sql",
    "money_ok_sql",
    "TABLES",
    "STAGE_TABLES",
    "EVENT_COLUMNS",
    "DERIVED_EVENT_COLUMNS",
    "REJECTED_COLUMNS",
    "HASH_TYPES",
    "MESSAGE_KEY_SQL",
    "message_key",
    "identifiers_sql",
    "identifiers_of",
    "node_sql",
]

# keyed-hash prefix -> identifier type (see omnithread.privacy.IdentifierType)
HASH_TYPES = {code: kind for kind, code in IDENTIFIER_CODES.items()}

# (column, logical type, nullable)
EVENT_COLUMNS = [
    ("message_id", "string", False),
    ("call", "string", False),
    ("event", "string", True),
    ("user_id", "string", True),
    ("anonymous_id", "string", True),
    ("previous_id", "string", True),
    ("group_id", "string", True),
    ("channel", "string", True),
    ("store_id", "string", True),
    ("event_at", "timestamp", False),
    ("original_at", "timestamp", True),
    ("sent_at", "timestamp", True),
    ("received_at", "timestamp", False),
    ("loaded_at", "timestamp", False),
    ("schema_version", "int", True),
    ("properties", "json", True),
    ("traits", "json", True),
    ("context", "json", True),
    ("consent", "json", True),
    ("extra", "json", True),
    ("source", "string", True),
]


class EventRow(NamedTuple):
    """One event as the log stores it: the fields of :data:`EVENT_COLUMNS`, by name (a test holds the two
    equal). JSON columns hold JSON text."""

    message_id: str
    call: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    previous_id: str | None
    group_id: str | None
    channel: str | None
    store_id: str | None
    event_at: datetime
    original_at: datetime | None
    sent_at: datetime | None
    received_at: datetime
    loaded_at: datetime
    schema_version: int | None
    properties: str | None
    traits: str | None
    context: str | None
    consent: str | None
    extra: str | None
    source: str | None


REJECTED_COLUMNS = [
    ("rejected_id", "string", False),
    ("rejected_at", "timestamp", False),
    ("source", "string", True),
    ("format", "string", False),
    ("reason_codes", "string[]", False),
    ("reasons", "json", False),
    ("payload", "json", True),
    ("payload_encrypted", "bytes", True),
    ("status", "string", False),
    ("attempts", "int", False),
    ("replayed_at", "timestamp", True),
]


class RejectedRow(NamedTuple):
    """One refused input as ``rejected_events`` keeps it: the fields of :data:`REJECTED_COLUMNS`, by name."""

    rejected_id: str
    rejected_at: datetime
    source: str | None
    format: str
    reason_codes: list[str]
    reasons: str
    payload: str | None
    payload_encrypted: bytes | None
    status: str
    attempts: int
    replayed_at: datetime | None


# Derived by the engine as each event is stored (see identifiers_sql and MESSAGE_KEY_SQL), never sent
# by a client.
DERIVED_EVENT_COLUMNS = [
    ("identifiers", "string[]", True),
    ("message_key", "uint64", True),
]

# A 64-bit number from the message id (half its MD5, which no engine version changes): the duplicate
# check of an import compares these numbers across the whole log, and message ids only where numbers
# meet, since reading and hashing every stored id made each import slower as the log grew.
MESSAGE_KEY_SQL = "md5_number_lower(message_id)"


def message_key(message_id: str) -> int:
    """``MESSAGE_KEY_SQL`` in Python (bytes 8 to 16 of the MD5, little-endian); a test holds them equal."""
    return int.from_bytes(hashlib.md5(message_id.encode("utf-8", "surrogatepass")).digest()[8:16], "little")


# How far the loader has moved each broker stream into the log (omnithread.ingest.loader): written in the
# same transaction as the events it moved, so a restarted loader starts exactly after them.
BROKER_POSITION_COLUMNS = [
    ("stream", "string", False),
    ("position", "string", False),
    ("loaded_at", "timestamp", False),
]

TABLES = {
    "events": EVENT_COLUMNS + DERIVED_EVENT_COLUMNS,
    "rejected_events": REJECTED_COLUMNS,
    "broker_positions": BROKER_POSITION_COLUMNS,
}

# Every other table omnithread keeps, with the stage that writes it and what it holds: the one list of the
# data directory's tables (a test fails on a table missing here). The engine creates the two above at
# open; a stage builds each of these from a query of the tables before it, through its own functions.
STAGE_TABLES = {
    "catalogue": ("collect (ingest.reference)", "one row per product: name, category, price, on sale, launched"),
    "inventory": ("collect (ingest.reference)", "units in stock per location and product, as of when"),
    "suppressed_identifiers": ("privacy.suppression", "identifiers whose events are refused at the door"),
    "identity_edges": ("connect (identity.resolve)", "links between identifiers, kept or dropped, with evidence"),
    "identity_map": ("connect (identity.resolve)", "each identifier's person, type, activity and blocking"),
    "persons": ("connect (identity.resolve)", "one row per person: identifiers counted by type"),
    "identity_state": ("connect (identity.resolve)", "the newest loaded_at the persons include"),
    "person_redirects": ("connect (identity.resolve)", "retired person ids and the ids that replaced them"),
    "identity_changes": ("connect (identity.incremental)", "merges and splits since the last full resolve"),
    "person_attributes": ("connect (identity.matching)", "names, addresses and birth dates for matching"),
    "identity_match_model": ("connect (identity.matching)", "the matcher's learnt parameters"),
    "profiles": ("understand (profile.build)", "one row per person: activity, orders, consent, RFM"),
    "skipped_rows": ("understand (profile.build)", "rows a stage left out at its last run, with the reason"),
    "lifetime_values": ("understand (analytics.lifetime)", "one row per buyer: purchase summary, P(alive), CLV"),
    "lifetime_models": ("understand (analytics.lifetime)", "the fitted BG/NBD and Gamma-Gamma parameters per group"),
    "audiences": ("understand (analytics.audiences)", "named rules over traits, lifetime value and recent events"),
    "audience_members": ("understand (analytics.audiences)", "who is in each audience, since when"),
    "audience_changes": ("understand (analytics.audiences)", "each join and leave of an audience, when"),
    "destinations": ("serve (destinations.webhooks)", "webhook destinations, their subscriptions and cursors"),
    "destination_outbox": ("serve (destinations.webhooks)", "each delivery: payload, attempts, status, latency"),
    "contact_vault": ("serve (destinations.exports)", "advertising-consented contacts as encrypted platform hashes"),
    "interactions": ("serve (recommend.interactions)", "person by product: signals counted, the weight trained on"),
}


def node_sql(value: str) -> str:
    """A node id (``type:value``) for a keyed hash, typed by its prefix."""
    cases = " ".join(f"WHEN '{prefix}_' THEN '{kind}:'" for prefix, kind in HASH_TYPES.items())
    return f"CASE left({value}, 3) {cases} END || {value}"


def _json_paths(*prefixes: str) -> str:
    return "[" + ", ".join(f"'$.{prefix}{key}'" for prefix in prefixes for key in IDENTIFIER_KEYS) + "]"


# a keyed hash's prefix inside JSON text (a string starting "xx_"), and a whole keyed hash
_HINT = re.compile('"(' + "|".join(sorted(HASH_TYPES)) + ")_")
_HASH = re.compile(HASH_PATTERN)


def identifiers_sql() -> str:
    """SQL, over a row of the event log, for the keyed hashes the event names: as identity-graph node
    ids (``email:em_...``), distinct and sorted, or NULL when it names none.

    Hashes are read from the identifier keys at the top level of traits and properties and at
    the top level and under ``traits`` of the context, plus Store Entered's ``entry_token``;
    only values shaped like keyed hashes count. A JSON column is parsed only when its text
    holds such a value (a string starting ``"xx_``, found by a regular expression far faster
    than parsing), so most events (page and product views) cost a scan of their text. The
    engine stores the result with each event, so identity resolution never parses the log.
    """
    hint = "'" + _HINT.pattern + "'"
    sections = [("traits", _json_paths("")), ("properties", _json_paths("")), ("context", _json_paths("", "traits."))]
    found = ", ".join(
        f"CASE WHEN regexp_matches({column}, {hint}) THEN json_extract_string({column}, {paths}) ELSE []::VARCHAR[] END"
        for column, paths in sections
    )
    return f"""nullif(list_sort(list_distinct(list_transform(list_filter(list_concat({found},
               [CASE WHEN event = 'Store Entered' THEN json_extract_string(properties, '$.entry_token') END]),
               lambda x: regexp_full_match(x, '{_HASH.pattern}')),
               lambda h: {node_sql("h")}))), []::VARCHAR[])"""


def identifiers_of(event: str | None, traits: str | None, properties: str | None, context: str | None) -> list | None:
    """``identifiers_sql`` in Python, for one event's stored JSON texts: the same node ids, distinct and
    sorted, or None. Rows that Python has parsed anyway get the column from here, which spares each small
    write the cost of preparing the SQL expression (most of a collector commit); a test holds the two equal
    on the simulated retailer's log and on edge cases."""
    found: list[str] = []
    entered = event == "Store Entered"
    for text, nested, entry in ((traits, False, False), (properties, False, entered), (context, True, False)):
        hinted = text is not None and _HINT.search(text) is not None
        if not (hinted or (entry and text is not None)):
            continue
        values = orjson.loads(text or "null")  # each section parsed once, the entry token read from the same parse
        if not isinstance(values, dict):
            continue
        sections = [values] if hinted else []
        if hinted and nested and isinstance(values.get("traits"), dict):
            sections.append(values["traits"])
        found += [section[key] for section in sections for key in IDENTIFIER_KEYS if isinstance(section.get(key), str)]
        if entry and isinstance(values.get("entry_token"), str):
            found.append(values["entry_token"])
    nodes = sorted({f"{HASH_TYPES[value[:2]]}:{value}" for value in found if _HASH.fullmatch(value)})
    return nodes or None


def number_sql(text: str, default: int) -> str:
    """A number read from JSON text ``text`` (``line->>'quantity'``) as DOUBLE: ``default`` when it is absent,
    NULL when it is there but not a number. Every stage reads counts and money through this, so a value the
    door would refuse (stored before the door checked it) reads as out of range, never as a failed cast."""
    return f"(CASE WHEN {text} IS NULL THEN {default} ELSE TRY_CAST({text} AS DOUBLE) END)"


def count_ok_sql(value: str) -> str:
    """True when ``value`` (a DOUBLE) is a count the schema allows: a whole number from 1 to ``MAX_COUNT``."""
    return f"coalesce({value} BETWEEN 1 AND {MAX_COUNT} AND {value} = floor({value}), false)"


def money_ok_sql(value: str) -> str:
    """True when ``value`` (a DOUBLE) is an amount the schema allows: 0 to ``MAX_MONEY``."""
    return f"coalesce({value} BETWEEN 0 AND {MAX_MONEY}, false)"
