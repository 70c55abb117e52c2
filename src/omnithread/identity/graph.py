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

__all__ = ["node_sql", "edges_sql", "nodes_sql", "HASH_TYPES", "EVENT_PERSONS_SQL"]

# keyed-hash prefix -> node type (see omnithread.privacy.IdentifierType)
HASH_TYPES = {"em": "email", "ph": "phone", "lc": "loyalty_card", "pt": "payment_token", "pa": "palm_token",
              "ac": "app_code"}


def node_sql(value: str) -> str:
    """A node id (``type:value``) for a keyed hash, typed by its prefix."""
    cases = " ".join(f"WHEN '{prefix}_' THEN '{kind}:'" for prefix, kind in HASH_TYPES.items())
    return f"CASE left({value}, 3) {cases} END || {value}"


def _hashed_values() -> list[str]:
    paths = []
    for section in ("traits", "properties", "context", "context.traits"):
        column, *rest = section.split(".")
        prefix = f"{column}" + "".join(f"->'{part}'" for part in rest)
        paths += [f"{prefix}->>'{key}'" for key in IDENTIFIER_KEYS]
    paths.append("CASE WHEN event = 'Store Entered' THEN properties->>'entry_token' END")
    return paths


def _per_event(source: str) -> str:
    hashed = ", ".join(_hashed_values())
    return f"""
per_event AS (
    SELECT message_id, event_at, coalesce(event, call) AS rule,
           CASE WHEN regexp_full_match(user_id, 'em_[0-9a-f]{{32}}') THEN 'email:' || user_id
                WHEN user_id IS NOT NULL THEN 'account:' || user_id END AS account,
           CASE WHEN anonymous_id IS NULL THEN NULL
                WHEN channel = 'store' THEN 'store_session:' || anonymous_id
                WHEN channel = 'voice' THEN 'voice_device:' || anonymous_id
                ELSE 'device:' || anonymous_id END AS anonymous,
           list_filter([{hashed}], lambda x: regexp_full_match(x, '[a-z]{{2}}_[0-9a-f]{{32}}')) AS hashes
    FROM {source}
)"""


def nodes_sql(source: str = "events") -> str:
    """Every identifier named by an event of ``source``, with the events that name it."""
    return f"""
WITH {_per_event(source)}
SELECT node, count(*) AS events, min(event_at) AS first_seen_at, max(event_at) AS last_seen_at
FROM (SELECT event_at, unnest(list_concat([account, anonymous], list_transform(hashes, lambda h: {node_sql('h')})))
      AS node FROM per_event)
WHERE node IS NOT NULL
GROUP BY node
"""


def edges_sql(source: str = "events") -> str:
    """One row per link between two identifiers, with its evidence, from ``source``."""
    return f"""
WITH {_per_event(source)}, pairs AS (
    SELECT message_id, event_at, rule, coalesce(account, anonymous) AS primary_node,
           unnest(list_distinct(list_concat(
               CASE WHEN account IS NOT NULL AND anonymous IS NOT NULL THEN [anonymous] ELSE [] END,
               list_transform(hashes, lambda h: {node_sql('h')})))) AS other_node
    FROM per_event
    WHERE account IS NOT NULL OR anonymous IS NOT NULL
)
SELECT least(primary_node, other_node) AS a, greatest(primary_node, other_node) AS b,
       count(*) AS events, min(event_at) AS first_seen_at, max(event_at) AS last_seen_at,
       arg_min(message_id, event_at) AS first_message_id, list_sort(list_distinct(list(rule)))[:8] AS rules
FROM pairs
WHERE other_node IS NOT NULL AND other_node <> primary_node
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
