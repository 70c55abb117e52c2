"""Identifiers and the evidence that links them, read set-based from the event log.

Every event names one or more identifiers: the account (``userId``), the device or
store session (``anonymousId``), and the keyed hashes of emails, phones, cards and
tokens in its traits and properties. All identifiers of one event are linked to its
primary identifier (the account when there is one), and each link keeps its
evidence: how many events, first and last seen, the first event's id, and the
rules (event names) that produced it.
"""

from __future__ import annotations

from omnithread.events.schema import IDENTIFIER_KEYS

__all__ = ["node_sql", "edges_sql", "nodes_sql", "mentions_sql", "HASH_TYPES", "EVENT_PERSONS_SQL"]

# keyed-hash prefix -> node type (see omnithread.privacy.IdentifierType)
HASH_TYPES = {"em": "email", "ph": "phone", "lc": "loyalty_card", "pt": "payment_token", "pa": "palm_token",
              "ac": "app_code"}


def node_sql(value: str) -> str:
    """A node id (``type:value``) for a keyed hash, typed by its prefix."""
    cases = " ".join(f"WHEN '{prefix}_' THEN '{kind}:'" for prefix, kind in HASH_TYPES.items())
    return f"CASE left({value}, 3) {cases} END || {value}"


def _json_paths(*prefixes: str) -> str:
    return "[" + ", ".join(f"'$.{prefix}{key}'" for prefix in prefixes for key in IDENTIFIER_KEYS) + "]"


def mentions_sql(source: str = "events") -> str:
    """Per event of ``source``: its account, its anonymous identifier and the keyed hashes it names.

    Each JSON column is parsed once, for all identifier keys together (top level of
    traits and properties; top level and ``traits`` of context), and Store Entered's
    ``entry_token`` is added; only values shaped like keyed hashes are kept.
    """
    return f"""
    SELECT message_id, event_at, coalesce(event, call) AS rule,
           CASE WHEN regexp_full_match(user_id, 'em_[0-9a-f]{{32}}') THEN 'email:' || user_id
                WHEN user_id IS NOT NULL THEN 'account:' || user_id END AS account,
           CASE WHEN anonymous_id IS NULL THEN NULL
                WHEN channel = 'store' THEN 'store_session:' || anonymous_id
                WHEN channel = 'voice' THEN 'voice_device:' || anonymous_id
                ELSE 'device:' || anonymous_id END AS anonymous,
           CASE WHEN {_may_name_hashes()} THEN list_filter(list_concat(
               json_extract_string(traits, {_json_paths('')}),
               json_extract_string(properties, {_json_paths('')}),
               json_extract_string(context, {_json_paths('', 'traits.')}),
               [CASE WHEN event = 'Store Entered' THEN properties->>'entry_token' END]),
               lambda x: regexp_full_match(x, '[a-z]{{2}}_[0-9a-f]{{32}}')) ELSE [] END AS hashes
    FROM {source}"""


def _may_name_hashes() -> str:
    """True for every event whose JSON holds a keyed hash (a string starting ``"xx_``), and few others.

    Most events (page views, product views) name no hash; a regular expression over the
    text finds the rest far faster than parsing every document.
    """
    prefixes = "|".join(sorted(HASH_TYPES))
    return " OR ".join(f"regexp_matches({column}, '\"({prefixes})_')" for column in ("traits", "properties", "context"))


def _per_event(source: str) -> str:
    return f"per_event AS ({mentions_sql(source)})"


def _mentions(source: str, mentions: str | None) -> str:
    return f"per_event AS (SELECT * FROM {mentions})" if mentions else _per_event(source)


def nodes_sql(source: str = "events", mentions: str | None = None) -> str:
    """Every identifier named by an event of ``source`` (or table ``mentions`` of ``mentions_sql``)."""
    return f"""
WITH {_mentions(source, mentions)}
SELECT node, count(*) AS events, min(event_at) AS first_seen_at, max(event_at) AS last_seen_at
FROM (SELECT event_at, unnest(list_concat([account, anonymous], list_transform(hashes, lambda h: {node_sql('h')})))
      AS node FROM per_event)
WHERE node IS NOT NULL
GROUP BY node
"""


def edges_sql(source: str = "events", mentions: str | None = None) -> str:
    """One row per link between two identifiers, with its evidence, from ``source`` (or ``mentions``)."""
    return f"""
WITH {_mentions(source, mentions)}, pairs AS (
    SELECT message_id, event_at, rule, coalesce(account, anonymous) AS primary_node,
           unnest(list_distinct(list_concat(
               CASE WHEN account IS NOT NULL AND anonymous IS NOT NULL THEN [anonymous] ELSE [] END,
               list_transform(hashes, lambda h: {node_sql('h')})))) AS other_node
    FROM per_event
    WHERE account IS NOT NULL OR anonymous IS NOT NULL
)
, by_rule AS (
    SELECT least(primary_node, other_node) AS a, greatest(primary_node, other_node) AS b, rule,
           count(*) AS events, min(event_at) AS first_seen_at, max(event_at) AS last_seen_at,
           arg_min(message_id, event_at) AS first_message_id
    FROM pairs
    WHERE other_node IS NOT NULL AND other_node <> primary_node
    GROUP BY 1, 2, 3
)
SELECT a, b, sum(events)::BIGINT AS events, min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at,
       arg_min(first_message_id, first_seen_at) AS first_message_id, list_sort(list(rule))[:8] AS rules
FROM by_rule
GROUP BY 1, 2
"""


# Each event belongs to the person of its account when it names one, otherwise to the
# person of its device, voice device or store session.
EVENT_PERSONS_SQL = """
SELECT e.*, coalesce(a.person_id, s.person_id) AS person_id
FROM events e
LEFT JOIN identity_map a ON a.identifier = 'account:' || e.user_id
LEFT JOIN identity_map s ON s.identifier =
    (CASE e.channel WHEN 'store' THEN 'store_session:' WHEN 'voice' THEN 'voice_device:' ELSE 'device:' END)
    || e.anonymous_id
"""
