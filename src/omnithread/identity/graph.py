"""Identifiers and the evidence that links them, read set-based from the event log.

Every event names one or more identifiers: the account (``userId``), the device or
store session (``anonymousId``), and the keyed hashes of emails, phones, cards and
tokens in its traits and properties. All identifiers of one event are linked to its
primary identifier (the account when there is one), and each link keeps its
evidence: how many events, first and last seen, the first event's id, and the
rules (event names) that produced it.
"""

from __future__ import annotations

from omnithread.engine.tables import HASH_TYPES, node_sql

__all__ = ["node_sql", "edges_sql", "nodes_sql", "keyed_sql", "hashed_sql", "HASH_TYPES", "EVENT_PERSONS_SQL"]


_ACCOUNT = """CASE WHEN regexp_full_match(user_id, 'em_[0-9a-f]{32}') THEN 'email:' || user_id
                WHEN user_id IS NOT NULL THEN 'account:' || user_id END"""
_ANONYMOUS = """CASE WHEN anonymous_id IS NULL THEN NULL
                WHEN channel = 'store' THEN 'store_session:' || anonymous_id
                WHEN channel = 'voice' THEN 'voice_device:' || anonymous_id
                ELSE 'device:' || anonymous_id END"""


def keyed_sql(source: str = "events") -> str:
    """The account and anonymous identifier of the events of ``source``, counted per pair and rule.

    Read from plain columns and grouped before any node id is spelt out, so the work is
    one pass over the log's narrow columns. Only events naming both an account and an
    anonymous identifier link them, so only those keep their rule (event name) apart and
    their first event's id; the rest are counted per identifier alone, with a NULL rule.
    """
    return f"""
    SELECT {_ACCOUNT} AS account, {_ANONYMOUS} AS anonymous, rule, events, first_at, last_at, first_message_id
    FROM (
        SELECT user_id, anonymous_id, CASE WHEN channel IN ('store', 'voice') THEN channel END AS channel,
               CASE WHEN user_id IS NOT NULL AND anonymous_id IS NOT NULL THEN coalesce(event, call) END AS rule,
               count(*) AS events, min(event_at) AS first_at,
               max(event_at) AS last_at,
               arg_min(message_id, event_at) FILTER (WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL)
                   AS first_message_id
        FROM {source}
        WHERE user_id IS NOT NULL OR anonymous_id IS NOT NULL
        GROUP BY ALL
    )"""


def hashed_sql(source: str = "events") -> str:
    """The keyed hashes the events of ``source`` name, as nodes linked to each event's primary identifier,
    counted per (primary, node, rule) with the evidence of ``keyed_sql``.

    The engine stores every event's keyed hashes as node ids in the log's ``identifiers``
    column as it takes the event in (see ``omnithread.engine.tables.identifiers_sql``),
    so this reads a narrow list column and never parses JSON. An event's own account is
    not linked to itself.
    """
    return f"""
    SELECT primary_node, node, rule, count(*) AS events, min(event_at) AS first_at, max(event_at) AS last_at,
           arg_min(message_id, event_at) AS first_message_id
    FROM (
        SELECT message_id, event_at, coalesce(event, call) AS rule, coalesce({_ACCOUNT}, {_ANONYMOUS}) AS primary_node,
               unnest(identifiers) AS node
        FROM {source}
        WHERE identifiers IS NOT NULL AND (user_id IS NOT NULL OR anonymous_id IS NOT NULL)
    )
    WHERE node <> primary_node
    GROUP BY ALL"""


def nodes_sql(keyed: str, hashed: str) -> str:
    """Every identifier named by an event, with the events that name it.

    ``keyed`` and ``hashed`` are relations of ``keyed_sql`` and ``hashed_sql`` rows
    (tables, or the queries in parentheses).
    """
    return f"""
SELECT node, sum(events)::BIGINT AS events, min(first_at) AS first_seen_at, max(last_at) AS last_seen_at
FROM (
    SELECT account AS node, events, first_at, last_at FROM {keyed} WHERE account IS NOT NULL
    UNION ALL SELECT anonymous, events, first_at, last_at FROM {keyed} WHERE anonymous IS NOT NULL
    UNION ALL SELECT node, events, first_at, last_at FROM {hashed}
)
GROUP BY node
"""


def edges_sql(keyed: str, hashed: str) -> str:
    """One row per link between two identifiers, with its evidence: every identifier of an event
    is linked to the event's primary identifier (its account, else its anonymous identifier)."""
    return f"""
WITH by_rule AS (
    SELECT least(account, anonymous) AS a, greatest(account, anonymous) AS b, rule, events, first_at, last_at,
           first_message_id
    FROM {keyed} WHERE account IS NOT NULL AND anonymous IS NOT NULL
    UNION ALL
    SELECT least(primary_node, node), greatest(primary_node, node), rule, events, first_at, last_at, first_message_id
    FROM {hashed}
)
SELECT a, b, sum(events)::BIGINT AS events, min(first_at) AS first_seen_at, max(last_at) AS last_seen_at,
       arg_min(first_message_id, first_at) AS first_message_id,
       -- joined and split again, as string_agg is far cheaper than list() here (a name holding chr(31),
       -- the unit separator, would show as two: rules are evidence shown to people, nothing decides on them)
       list_sort(list_distinct(string_split(string_agg(rule, chr(31)), chr(31))))[:8] AS rules
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
