"""The set-based fast path for JSON Lines: the engine validates and stores the plain cases.

Python validating one event at a time tops out far below what a retailer's
exports need, so a JSON Lines file is read in chunks of lines that go to the
engine whole, as an Arrow column. One generated SQL statement parses every line,
checks it against the same schema the Python validator uses, pseudonymises every
direct identifier by calling the pseudonymiser itself (registered in the engine as
one function per identifier kind, so the key never appears in a statement),
corrects clock skew, and stores the lines it can vouch for.

The fast path is deliberately conservative: a line it cannot vouch for (bad
JSON, a problem of any kind, an id derived from content, a batch, an unusual but
perhaps valid form) goes to the Python path, which is the one source of every
verdict and every message. So the fast path only ever decides "valid, and stored
exactly so"; a conformance test holds it to the Python path's answers.

What it shares with the Python path is defined once and read by both: the schema's field specs (types,
ranges, choices, and the events' own rules: a field required unless another has a given value, an object's
values all of one type: ``omnithread.events.schema``); the identifier keys, the hash prefixes and the normal
forms' patterns (``IDENTIFIER_CODES``, ``EMAIL_PATTERN``, ``CARD_PATTERN``, ``TOKEN_PATTERN``); the keyed hash
with its normalisers (the pseudonymiser itself, registered in the engine); the personal-data rule (the Python
rule itself, behind the engine's screen ``omnithread.privacy.detect.screen_sql``, built from the rule's own
key spellings); and the clock-skew correction (``omnithread.events.validate.event_time``, written once over
a few operations that Python's values and SQL text each supply). What the fast path adds of its own is how it
reads JSON and which lines it leaves to Python; ``tests/ingest/test_fast_path.py`` holds both paths to the
same stored rows and refusals (1,200 generated calls, the hypothesis run, the simulated retailer and a
corpus of Segment's own libraries' payloads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import numpy as np
import orjson
import pyarrow as pa

from omnithread.engine.base import string_list_sql
from omnithread.engine.tables import EVENT_COLUMNS
from omnithread.events.schema import (
    BIOMETRIC_KEYS,
    CARD_PATTERN,
    CHANNEL_ALIASES,
    CHANNELS,
    EMAIL_PATTERN,
    ENTRY_TOKEN_TYPES,
    EVENT_SCHEMAS,
    IDENTIFIER_CODES,
    IDENTIFIER_KEYS,
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    PRODUCT_FIELDS,
    TOKEN_PATTERN,
    TOP_LEVEL_KEYS,
    VALUE_TYPES,
    FieldSpec,
)
from omnithread.events.validate import event_time
from omnithread.privacy.detect import IPV4, SCREEN, screen_sql

__all__ = ["FastPathSQL", "line_chunks", "chunk_table", "hash_function", "PERSONAL_DATA_FUNCTION"]

PERSONAL_DATA_FUNCTION = "omnithread_personal_data"
_CALLS = ("track", "identify", "page", "screen")
_TOP_LEVEL = tuple(k for k in TOP_LEVEL_KEYS if k not in ("previousId", "groupId"))  # alias, group: Python
_TIMES = ("originalTimestamp", "timestamp", "sentAt", "receivedAt")
# sections whose identifier keys are hashed, with their JSON path and position in ``keys``
_SECTIONS = {
    "traits": ("$.traits", 2),
    "properties": ("$.properties", 3),
    "context": ("$.context", 4),
    "context.traits": ("$.context.traits", 5),
}
_CODES = IDENTIFIER_CODES
_ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?(Z|[+-]\d{2}:\d{2})?"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_list(values) -> str:
    return "(" + ", ".join(_quote(v) for v in values) + ")"


def _none_if_empty(json: str) -> str:
    """NULL for an empty object, as the Python path stores nothing for one."""
    return f"nullif(({json})::VARCHAR, '{{}}')::JSON"


_SCREEN_SQL = _quote(SCREEN)


_WITHOUT_IP = """CASE WHEN _ip_done THEN json_merge_patch(context, '{"ip": null}') ELSE context END"""


def _personal_data(column: str, screened: str | None = None) -> str:
    """A section's JSON after the personal-data rule: the screen passes most as they are; the rule itself
    (a Python function registered in the engine) takes the few it matches. ``screened`` is what the screen
    reads, when not the section itself (the context without the IP address truncated already)."""
    return (
        f"CASE WHEN {column} IS NOT NULL AND {screen_sql(f'({screened or column})::VARCHAR')} "
        f"THEN {PERSONAL_DATA_FUNCTION}({column}::VARCHAR)::JSON ELSE {column} END"
    )


def _type_sql(f: str) -> str:
    """The JSON type of a JSON text, read from its first character (NULL for null or absent).

    Types are small integers, cheap to compare, read from the code of the first character:
    1 string, 2 object, 3 array, 4 true, 5 false, 0 number.
    """
    return (
        f"(CASE WHEN {f} IS NOT NULL THEN CASE ascii({f}) WHEN 34 THEN 1 WHEN 123 THEN 2 WHEN 91 THEN 3 "
        f"WHEN 116 THEN 4 WHEN 102 THEN 5 WHEN 110 THEN NULL ELSE 0 END END)"
    )


def _value_sql(f: str) -> str:
    """The text of a JSON value: strings unquoted and unescaped, NULL for a JSON null."""
    return f"json_extract_string({f}, '$')"


class _Fields:
    """The JSON paths one ``json_transform`` reads in a single parse.

    Path i's JSON text is column ``f_i``, its type ``t_i`` and its text ``v_i``.
    """

    def __init__(self):
        self.paths: list[str] = []
        self._index: dict[str, int] = {}
        self._valued: set[int] = set()  # paths whose text (not only type) some check reads

    def __call__(self, path: str) -> int:
        if path not in self._index:
            self.paths.append(path)
            self._index[path] = len(self.paths)
        return self._index[path]

    def f(self, path: str) -> str:
        return f"f_{self(path)}"

    def s(self, path: str) -> str:
        index = self(path)
        self._valued.add(index)
        return f"v_{index}"

    def t(self, path: str) -> str:
        return f"t_{self(path)}"

    def spec(self, arrays: dict[str, list[str]]) -> str:
        """The ``json_transform`` structure: every path as JSON text, ``arrays`` as lists of records."""
        tree: dict = {}
        leaves: list[tuple[str, object]] = [(path, "JSON") for path in self.paths]
        leaves += [(path, [{name: "JSON" for name in fields}]) for path, fields in arrays.items()]
        for path, kind in leaves:
            node = tree
            *parents, leaf = path[2:].split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = kind
        return orjson.dumps(tree).decode().replace("'", "''")

    @staticmethod
    def access(path: str) -> str:
        return "j" + "".join(f"[{_quote(k)}]" for k in path[2:].split("."))

    def raw_columns(self) -> str:
        return ", ".join(f"{self.access(p)} AS f_{i}" for i, p in enumerate(self.paths, 1))

    def typed_columns(self) -> str:
        return ", ".join(
            f"f_{i}, {_type_sql(f'f_{i}')} AS t_{i}"
            + (f", {_value_sql(f'f_{i}')} AS v_{i}" if i in self._valued else "")
            for i in range(1, len(self.paths) + 1)
        )


_TYPE_SQL = {
    "string": "= 1",
    "number": "= 0",
    "integer": "= 0",
    "boolean": "IN (4, 5)",
    "object": "= 2",
    "products": "= 3",
    "identifier": "= 1",
}


class _SQLTimes:
    """``omnithread.events.validate.event_time`` written in SQL: the clock-skew rule has one definition."""

    def known(self, *values: str) -> str:
        return "(" + " AND ".join(f"{v} IS NOT NULL" for v in values) + ")"

    def minus(self, a: str, b: str) -> str:
        return f"({a} - {b})"

    def first(self, *values: str) -> str:
        return f"coalesce({', '.join(values)})"

    def choose(self, condition: str, then, otherwise) -> str:
        return f"CASE WHEN {condition} THEN {then()} ELSE {otherwise()} END"


_SQL_TIMES = _SQLTimes()

# the JSON types (as the engine's json_type names them) of each type an object's values may be held to
_JSON_TYPES = {"boolean": ("BOOLEAN",), "number": ("BIGINT", "UBIGINT", "DOUBLE"), "string": ("VARCHAR",)}
assert set(_JSON_TYPES) == set(VALUE_TYPES)


def _field_ok(spec: FieldSpec, t: str, s: str, f: str) -> str:
    """SQL that is true when one property satisfies its spec (type ``t``, text ``s``, JSON ``f``)."""
    present = f"({t} IS NOT NULL)"
    checks = [f"{t} {_TYPE_SQL[spec.type]}"]
    if spec.type == "integer":
        checks.append(f"NOT regexp_matches({f}::VARCHAR, '[.eE]')")
    if spec.minimum is not None and spec.type in ("number", "integer"):
        checks.append(f"TRY_CAST({s} AS DOUBLE) >= {spec.minimum!r}")
    if spec.maximum is not None and spec.type in ("number", "integer"):
        checks.append(f"TRY_CAST({s} AS DOUBLE) <= {spec.maximum!r}")
    if spec.choices is not None:
        checks.append(f"{s} IN {_sql_list(spec.choices)}")
    valid = " AND ".join(checks)
    return f"({present} AND {valid})" if spec.required else f"(NOT {present} OR ({valid}))"


_PRODUCTS = "$.properties.products"


def _product_line_ok() -> str:
    """One line of a products array (record ``x``, one JSON text per field) satisfies the product spec.

    An element that is not an object reads as a record of nulls and so fails the
    required ``product_id``.
    """
    fields = []
    for name, spec in PRODUCT_FIELDS.items():
        f = f"x[{_quote(name)}]"
        fields.append(_field_ok(spec, _type_sql(f), _value_sql(f), f))
    return " AND ".join(f"coalesce({c}, false)" for c in fields)


def _products_ok(required: bool) -> str:
    """The products array is present (if required), an array, and none of its lines is bad.

    Lines are judged apart, unnested in the ``bad_lines`` step, which is far cheaper
    than a lambda over each list.
    """
    present = "(products IS NOT NULL OR contains(sections[1]::VARCHAR, '\"products\"'))"
    absent_ok = "false" if required else "true"
    return f"CASE WHEN NOT {present} THEN {absent_ok} WHEN products IS NULL THEN false ELSE NOT has_bad_line END"


def hash_function(kind: str) -> str:
    """The name under which the engine calls the pseudonymiser for identifiers of ``kind``: the keyed hash
    has one definition (``Pseudonymiser.hash``), which the fast path calls, and the key never enters SQL."""
    return f"omnithread_hash_{kind}"


@dataclass(frozen=True)
class _Identifier:
    section: str
    key: str
    kind: str  # identifier type; "entry_token" when it follows Store Entered's entry method

    @property
    def path(self) -> str:
        return f"{_SECTIONS[self.section][0]}.{self.key}"


class FastPathSQL:
    """Generates the fast path's statement from the schema.

    ``sql`` selects the rows of ``_chunk(line_no, raw)`` it vouches for, as rows of
    the event log (plus ``line_no``); it reads the parameters ``$now`` and
    ``$source_prefix``; it needs the engine to hold, as scalar string functions, the
    pseudonymiser's hash for each identifier type (:func:`hash_function`) and the
    personal-data rule (:data:`PERSONAL_DATA_FUNCTION`).
    """

    def __init__(self, max_future_seconds: float, earliest: datetime, ip_mode: str = "truncate"):
        # in truncate mode, set in _build once the fields exist; in hash mode the rule's function keys it
        self.ip_truncated: str | None = None if ip_mode == "truncate" else "false"
        self.max_future_seconds = max_future_seconds
        self.earliest = earliest
        self.p = _Fields()
        self.identifiers = [
            _Identifier(section, key, kind) for section in _SECTIONS for key, kind in IDENTIFIER_KEYS.items()
        ] + [_Identifier("properties", "entry_token", "entry_token")]
        self.checks: list[str] = []
        self.sql = self._build()

    # -- identifiers ------------------------------------------------------------------
    def _normal(self, kind: str, s: str) -> tuple[str, str]:
        """(SQL of the normal form, condition that SQL normalises it exactly as Python does)."""
        if kind == "email":
            normal = f"lower(trim({s}))"
            return (
                normal,
                f"regexp_full_match({s}, ' *[!-~]+ *') AND regexp_full_match({normal}, {_quote(EMAIL_PATTERN)})",
            )
        if kind == "phone":  # (the pseudonymiser's own normaliser decides, through the hash function)
            return s, f"{hash_function(kind)}({s}) IS NOT NULL"
        if kind == "loyalty_card":
            normal = f"upper(replace(replace({s}, ' ', ''), '-', ''))"
            return (
                normal,
                f"regexp_full_match({s}, '[A-Za-z0-9 -]+') AND regexp_full_match({normal}, {_quote(CARD_PATTERN)})",
            )
        return s, f"regexp_full_match({s}, {_quote(TOKEN_PATTERN)})"

    def _hash_of(self, kind: str, s: str) -> tuple[str, str]:
        """(condition the value can be hashed here, SQL of its hash) for a non-empty string: the patterns say
        whether the Python path would take the value as it is; the hash is the pseudonymiser's own."""
        _, fast = self._normal(kind, s)
        hashed = f"regexp_full_match({s}, '{_CODES[kind]}_[0-9a-f]{{32}}')"
        any_hash = f"regexp_full_match({s}, '[a-z]{{2}}_[0-9a-f]{{32}}')"
        ok = f"({hashed} OR (NOT {any_hash} AND {fast}))"
        return ok, f"CASE WHEN {hashed} THEN {s} ELSE {hash_function(kind)}({s}) END"

    def _identifier(self, ident: _Identifier) -> tuple[str, str]:
        """(condition the identifier is absent or hashable here, SQL of its hash)."""
        t, s = self.p.t(ident.path), self.p.s(ident.path)
        absent = f"({t} IS NULL OR {s} = '')"
        if ident.kind != "entry_token":
            ok, value = self._hash_of(ident.kind, s)
            # CASE, not OR: the regular expressions run only on rows that hold the identifier
            return f"CASE WHEN {absent} THEN true ELSE ({t} = 1 AND {ok}) END", value
        method = self.p.s("$.properties.entry_method")
        oks, values = [], []
        for entry_method, kind in ENTRY_TOKEN_TYPES.items():
            ok, value = self._hash_of(kind, s)
            oks.append(f"WHEN {_quote(entry_method)} THEN {ok}")
            values.append(f"WHEN {_quote(entry_method)} THEN {value}")
        # Only Store Entered types its token; elsewhere an entry_token is an ordinary property.
        store_entered = "(call = 'track' AND event_name = 'Store Entered')"
        ok = (
            f"CASE WHEN {absent} OR NOT {store_entered} THEN true "
            f"ELSE ({t} = 1 AND CASE {method} {' '.join(oks)} ELSE false END) END"
        )
        return ok, f"CASE {method} {' '.join(values)} END"

    def _section_sql(self, section: str, base: str) -> str:
        """The section's JSON with its identifiers replaced by their hashes.

        ``context.traits`` identifiers are patched through the context section;
        the context also loses its consent (stored apart) and gets the channel's
        canonical name.
        """
        patches = []
        for ident in self.identifiers:
            nested = section == "context" and ident.section == "context.traits"
            if ident.section != section and not nested:
                continue
            t, s = self.p.t(ident.path), self.p.s(ident.path)
            _, value = self._identifier(ident)
            patch = f"json_object({_quote(ident.key)}, {value})"
            if nested:
                patch = f"json_object('traits', {patch})"
            when = f"{t} = 1 AND {s} <> ''"
            if ident.kind == "entry_token":
                when += " AND call = 'track' AND event_name = 'Store Entered'"
            patches.append(f"CASE WHEN {when} THEN {patch} ELSE '{{}}'::JSON END")
        expr = base
        for patch in patches:
            expr = f"json_merge_patch({expr}, {patch})"
        # Most sections hold no identifier: patch only those that do (each patch re-parses).
        holds = " OR ".join(
            f"{self.p.t(i.path)} IS NOT NULL"
            for i in self.identifiers
            if i.section == section or (section == "context" and i.section == "context.traits")
        )
        expr = f"CASE WHEN {holds} THEN {expr} ELSE {base} END"
        if section == "context":
            # the IP address nearly every web call carries, truncated here as the rule truncates it, so that
            # the screen (which then skips it) passes such contexts without the rule's function
            ip = self.p.s("$.context.ip")
            expr = (
                f"CASE WHEN {self.ip_truncated} THEN json_merge_patch({expr}, json_object('ip', "
                f"regexp_replace({ip}, '\\.[0-9]+$', '.0'))) ELSE {expr} END"
            )
            renamed = (
                "CASE WHEN channel IS NULL THEN json_object('consent', NULL) "
                "ELSE json_object('consent', NULL, 'channel', channel) END"
            )
            needs = f"(consent_json IS NOT NULL OR channel IS DISTINCT FROM {self.p.s('$.context.channel')})"
            expr = f"CASE WHEN {needs} THEN json_merge_patch({expr}, {renamed}) ELSE {expr} END"
        return f"CASE WHEN {base} IS NULL THEN NULL ELSE {expr} END"

    # -- checks -----------------------------------------------------------------------
    def _schema_ok(self) -> str:
        cases = []
        for name, schema in EVENT_SCHEMAS.items():
            checks = []
            for field, spec in schema.properties.items():
                path = f"$.properties.{field}"
                if spec.type == "products":
                    checks.append(_products_ok(spec.required))
                else:
                    checks.append(_field_ok(spec, self.p.t(path), self.p.s(path), self.p.f(path)))
                if spec.required_unless is not None:
                    other, exempt = spec.required_unless
                    given = self.p.s(f"$.properties.{other}")
                    checks.append(
                        f"(coalesce({given}, {_quote(exempt)}) = {_quote(exempt)} "
                        f"OR coalesce({self.p.s(path)}, '') <> '')"
                    )
                if spec.values is not None:
                    checks.append(
                        f"coalesce(list_bool_and(list_transform(json_extract(raw, {_quote(path + '.*')}), "
                        f"lambda x: json_type(x) IN {_sql_list(_JSON_TYPES[spec.values])})), true)"
                    )
            if schema.requires_store:
                # Python copies a missing properties.store_id from the context: leave that to it.
                checks.append(f"{self.p.t('$.properties.store_id')} = 1")
            cases.append(f"WHEN {_quote(name)} THEN ({' AND '.join(checks) or 'true'})")
        return f"(call <> 'track' OR CASE event_name {' '.join(cases)} ELSE true END)"

    def _checks(self) -> list[str]:
        s, t = self.p.s, self.p.t
        checks = []
        for key in ("userId", "anonymousId"):  # strings; numbers, "" and what may hold personal data: Python
            checks.append(
                f"({t('$.' + key)} IS NULL OR ({t('$.' + key)} = 1 AND strlen({s('$.' + key)}) "
                f"BETWEEN 1 AND 256 AND NOT regexp_matches({s('$.' + key)}, {_SCREEN_SQL})))"
            )
        for text in (s("$.messageId"), "event_name", s("$.name")):  # the rule reads these strings too
            checks.append(f"NOT coalesce(regexp_matches({text}, {_SCREEN_SQL}), false)")
        # nesting: no deeper than the brackets a line holds, so a line with few enough is shallow enough
        checks.append(f"strlen(raw) - strlen(replace(replace(raw, '{{', ''), '[', '')) <= {MAX_DEPTH}")
        checks.append(f"({t('$.userId')} = 1 OR {t('$.anonymousId')} = 1)")
        checks.append(f"({t('$.messageId')} = 1 AND strlen({s('$.messageId')}) BETWEEN 1 AND 256)")
        for i in range(1, 5):  # properties, traits, context, context.consent: absent or objects
            checks.append(f"(sections[{i}] IS NULL OR ascii(sections[{i}]) IN (123, 110))")  # '{' or 'n'ull
        checks.append(f"call IN {_sql_list(_CALLS)}")
        checks.append(
            f"(call <> 'track' OR ({t('$.event')} = 1 AND strlen(event_name) <= 200 "
            f"AND regexp_matches(event_name, '[!-~]')))"
        )
        checks.append(f"(call NOT IN ('page', 'screen') OR {t('$.name')} IS NULL OR {t('$.name')} = 1)")
        checks.append(f"list_has_all({string_list_sql(_TOP_LEVEL)}, top_keys)")
        channels = sorted(set(CHANNELS) | set(CHANNEL_ALIASES))
        checks.append(
            f"({t('$.context.channel')} IS NULL OR ({t('$.context.channel')} = 1 "
            f"AND {s('$.context.channel')} IN {_sql_list(channels)}))"
        )
        for key in ("$.context.store_id", "$.properties.store_id"):
            checks.append(f"({t(key)} IS NULL OR ({t(key)} = 1 AND {s(key)} <> ''))")
        checks.append("(channel IS DISTINCT FROM 'store' OR store_id IS NOT NULL)")
        for key in _TIMES:
            checks.append(
                f"({t('$.' + key)} IS NULL OR ({t('$.' + key)} = 1 AND regexp_full_match({s('$.' + key)}, '{_ISO}')))"
            )
        checks.append(f"strlen(raw) <= {MAX_EVENT_BYTES}")
        checks.append(f"event_at <= coalesce(received, now) + to_microseconds({int(self.max_future_seconds * 1e6)})")
        checks.append(f"event_at >= TIMESTAMPTZ '{self.earliest.isoformat()}'")
        # Raw biometric data anywhere in a section: Python removes it and refuses the event.
        # (A string that merely contains such a key also goes to Python, which is harmless.)
        biometric = "|".join(sorted(BIOMETRIC_KEYS))
        checks.extend(
            f"NOT coalesce(regexp_matches(sections[{i}]::VARCHAR, '\"({biometric})\"'), false)" for i in (1, 2, 3)
        )
        checks.extend(self._identifier(i)[0] for i in self.identifiers)
        checks.append(self._schema_ok())
        return checks

    # -- the statement ----------------------------------------------------------------
    def _columns(self) -> str:
        s = self.p.s
        versions = " ".join(f"WHEN {_quote(n)} THEN {sc.version}" for n, sc in EVENT_SCHEMAS.items())
        column_sql = {
            "message_id": s("$.messageId"),
            "call": "call",
            "event": f"CASE WHEN call = 'track' THEN event_name WHEN call IN ('page', 'screen') THEN {s('$.name')} END",
            "user_id": s("$.userId"),
            "anonymous_id": s("$.anonymousId"),
            "previous_id": "NULL",
            "group_id": "NULL",
            "channel": "channel",
            "store_id": "store_id",
            "event_at": "event_at",
            "original_at": "device_at",
            "sent_at": "sent",
            "received_at": "coalesce(received, now)",
            "loaded_at": "now",
            "schema_version": f"CASE WHEN call = 'track' THEN CASE event_name {versions} ELSE NULL END END",
            "properties": _none_if_empty(self._section_sql("properties", "sections[1]")),
            "traits": _none_if_empty(self._section_sql("traits", "sections[2]")),
            "context": _none_if_empty(self._section_sql("context", "sections[3]")),
            "consent": _none_if_empty("consent_json"),
            "extra": "NULL",
            "source": "source_prefix || line_no::VARCHAR",
        }
        return (
            ", ".join(f"{column_sql[name]} AS {name}" for name, _, _ in EVENT_COLUMNS)
            + f", {self.ip_truncated} AS _ip_done"
        )

    def _build(self) -> str:
        p, s = self.p, self.p.s
        if self.ip_truncated is None:
            self.ip_truncated = f"({p.t('$.context.ip')} = 1 AND regexp_full_match({s('$.context.ip')}, '{IPV4}'))"
        for key in _TOP_LEVEL:
            if key not in ("properties", "traits", "context"):  # sections are read whole
                p(f"$.{key}")
        for path in (
            "$.context.channel",
            "$.context.store_id",
            "$.properties.store_id",
            "$.type",
            "$.event",
            "$.originalTimestamp",
            "$.timestamp",
            "$.sentAt",
            "$.receivedAt",
        ):
            s(path)  # read as text by the statement below, so their text columns must exist
        self.checks = self._checks()
        columns = self._columns()
        # A filter, not a column: the engine evaluates each check only on rows that passed the others.
        fast_ok = "\n      AND ".join(f"coalesce({c}, false)" for c in self.checks)
        channel_map = " ".join(f"WHEN {_quote(a)} THEN {_quote(c)}" for a, c in CHANNEL_ALIASES.items())
        store_events = _sql_list(sorted(n for n, sc in EVENT_SCHEMAS.items() if sc.requires_store))
        section_paths = "['$.properties', '$.traits', '$.context', '$.context.consent']"
        # Product lines are judged on their own parse of the few lines that name products (or might,
        # behind an escape), so the main parse has one reader and streams instead of being kept whole.
        objects = (
            "(SELECT line_no, raw FROM _chunk WHERE raw IS NOT NULL AND (prefix(raw, '{') OR "
            "left(ltrim(raw, ' ' || chr(9) || chr(10) || chr(13)), 1) = '{') AND json_valid(raw))"
        )
        product_list = orjson.dumps([{name: "JSON" for name in PRODUCT_FIELDS}]).decode()
        return f"""
WITH parsed AS (
    SELECT line_no, raw, json_keys(raw) AS top_keys,
           json_transform(raw, '{p.spec({_PRODUCTS: list(PRODUCT_FIELDS)})}') AS j,
           json_extract(raw, {section_paths}) AS sections
    FROM {objects}
), raw_fields AS (
    SELECT line_no, raw, top_keys, sections, sections[4] AS consent_json,
           {p.access(_PRODUCTS)} AS products, {p.raw_columns()}
    FROM parsed
), bad_lines AS (
    SELECT DISTINCT line_no FROM (
        SELECT line_no, unnest(json_transform(json_extract(raw, '{_PRODUCTS}'), '{product_list}')) AS x
        FROM {objects} WHERE contains(raw, '"products"') OR contains(raw, '\\u'))
    WHERE NOT ({_product_line_ok()})
), spread AS (
    SELECT line_no, raw, top_keys, sections, consent_json, products,
           line_no IN (SELECT line_no FROM bad_lines) AS has_bad_line, {p.typed_columns()}
    FROM raw_fields
), named AS (
    SELECT *, {s("$.type")} AS call, {s("$.event")} AS event_name,
           CASE {s("$.context.channel")} {channel_map} ELSE {s("$.context.channel")} END AS channel0,
           coalesce(nullif({s("$.context.store_id")}, ''), nullif({s("$.properties.store_id")}, '')) AS store_id
    FROM spread
), timed AS (
    SELECT *,
           CASE WHEN channel0 IS NULL AND call = 'track' AND event_name IN {store_events} THEN 'store'
                ELSE channel0 END AS channel,
           TRY_CAST(coalesce({s("$.originalTimestamp")}, {s("$.timestamp")}) AS TIMESTAMPTZ) AS device_at,
           TRY_CAST({s("$.sentAt")} AS TIMESTAMPTZ) AS sent,
           TRY_CAST({s("$.receivedAt")} AS TIMESTAMPTZ) AS received,
           $now::TIMESTAMPTZ AS now, $source_prefix::VARCHAR AS source_prefix
    FROM named
), corrected AS (
    SELECT *, {event_time("device_at", "sent", "received", "now", _SQL_TIMES)} AS event_at
    FROM timed
)
SELECT line_no, * EXCLUDE (line_no, properties, traits, context, consent, _ip_done),
       {_personal_data("properties")} AS properties, {_personal_data("traits")} AS traits,
       {_personal_data("context", _WITHOUT_IP)} AS context, {_personal_data("consent")} AS consent
FROM (SELECT line_no, {columns} FROM corrected WHERE {fast_ok})
"""


def line_chunks(handle, chunk_bytes: int = 64 << 20) -> Iterator[tuple[int, memoryview]]:
    """Yield (first line number, whole lines) from a binary file, chunk by chunk.

    Each chunk is read straight into a buffer of its own (one copy, where joining the previous
    chunk's last partial line to a block and then cutting the block's own partial line off each
    copied the whole chunk again) and handed on as a view of its whole lines. A file's last
    quarter-chunk or less joins the chunk before it: each chunk costs the engine a fixed time to
    plan, too much for a small remainder.
    """
    carry = b""
    line = 1
    try:
        size = os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        size = None
    while True:
        want = chunk_bytes
        if size is not None:  # the rest of the file when it is a quarter-chunk more at most (at least
            rest = size - handle.tell()  # 64 KB, should the file have grown since it was opened)
            if rest - chunk_bytes <= chunk_bytes // 4:
                want = max(rest, 1 << 16)
        buf = bytearray(len(carry) + want)
        buf[: len(carry)] = carry
        got = handle.readinto(memoryview(buf)[len(carry) :])
        total = len(carry) + (got or 0)
        if not got:
            if carry:
                yield line, memoryview(carry if carry.endswith(b"\n") else carry + b"\n")
            return
        cut = buf.rfind(b"\n", 0, total)
        if cut < 0:
            carry = bytes(buf[:total])
            continue
        carry = bytes(buf[cut + 1 : total])
        yield line, memoryview(buf)[: cut + 1]
        line += buf.count(b"\n", 0, cut + 1)


def _positions(buf: np.ndarray, test, step: int = 8 << 20) -> np.ndarray:
    """Positions of the bytes of ``buf`` that pass ``test``, found slice by slice: a mask of the whole
    chunk would take a fresh block of memory the size of the chunk each time, which costs more to map
    than the comparison itself."""
    found = [np.flatnonzero(test(buf[start : start + step])) + start for start in range(0, len(buf), step)]
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _mark_undecodable(data: bytes | memoryview, offsets: np.ndarray, lo: int, hi: int, valid: np.ndarray) -> None:
    """Mark lines lo..hi that are not UTF-8, halving the range until the culprits are found."""
    try:
        str(data[offsets[lo] : offsets[hi]], "utf-8")
    except UnicodeDecodeError:
        if hi - lo == 1:
            valid[lo] = False
            return
        mid = (lo + hi) // 2
        _mark_undecodable(data, offsets, lo, mid, valid)
        _mark_undecodable(data, offsets, mid, hi, valid)


def _mark_undecodable_lines(
    data: bytes | memoryview, buf: np.ndarray, offsets: np.ndarray, valid: np.ndarray, window: int = 1024
) -> None:
    """Mark the lines of ``data`` that are not UTF-8. Only windows of lines holding a byte outside
    ASCII are decoded (one decode a window, halved only where it fails), so an ASCII file costs one
    scan of its bytes and a file full of accents one decode a window, not one a line."""
    high = _positions(buf, lambda part: part >= 0x80)
    if not len(high):
        return
    lines = len(offsets) - 1
    for w in np.unique((np.searchsorted(offsets, high, side="right") - 1) // window).tolist():
        _mark_undecodable(data, offsets, w * window, min((w + 1) * window, lines), valid)


def chunk_table(first_line: int, data: bytes | memoryview, batch_rows: int = 4096) -> tuple[pa.Table, np.ndarray]:
    """An Arrow table (line_no, raw) over ``data`` without copying; lines not UTF-8 are null.

    It comes in batches of ``batch_rows`` so the engine can scan it on every core.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = _positions(buf, lambda part: part == 10)
    offsets = np.r_[0, newlines + 1].astype(np.int64)
    valid = np.ones(len(newlines), dtype=bool)
    _mark_undecodable_lines(data, buf, offsets, valid)
    bitmap = pa.array(valid).buffers()[1] if not valid.all() else None
    raw = pa.Array.from_buffers(
        pa.large_string(),
        len(newlines),
        [bitmap, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)],
        null_count=int((~valid).sum()),
    )
    line_no = pa.array(np.arange(first_line, first_line + len(newlines), dtype=np.int64))
    table = pa.table({"line_no": line_no, "raw": raw})
    return pa.Table.from_batches(table.to_batches(max_chunksize=batch_rows)), offsets
