"""Identifiers and the evidence that links them, read set-based from the event log.

Every event names one or more identifiers: the account (``userId``), the device or
store session (``anonymousId``), and the keyed hashes of emails, phones, cards and
tokens in its traits and properties. All identifiers of one event are linked to its
primary identifier (the account when there is one), and each link keeps its
evidence: how many events, first and last seen, the first event's id, and the
rules (event names) that produced it.

Grouping is what costs at scale, so the log's rows are grouped once, on its plain
columns, and a link's rules are gathered as bits (one per event name) rather than
grouped by as well, which would multiply the rows to group by the rules seen.
"""

from __future__ import annotations

from omnithread.engine.base import Engine, string_list_sql
from omnithread.engine.tables import HASH_TYPES, node_sql

__all__ = [
    "node_sql",
    "edges_sql",
    "nodes_sql",
    "keyed_sql",
    "hashed_sql",
    "rule_names",
    "HASH_TYPES",
    "EVENT_PERSONS_SQL",
]


_ACCOUNT = """CASE WHEN regexp_full_match(user_id, 'em_[0-9a-f]{32}') THEN 'email:' || user_id
                WHEN user_id IS NOT NULL THEN 'account:' || user_id END"""
_ANONYMOUS = """CASE WHEN anonymous_id IS NULL THEN NULL
                WHEN channel = 'store' THEN 'store_session:' || anonymous_id
                WHEN channel = 'voice' THEN 'voice_device:' || anonymous_id
                ELSE 'device:' || anonymous_id END"""


def rule_names(engine: Engine, source: str = "events") -> list[str]:
    """The distinct rules (event names, else the call) of the events of ``source``, sorted: the
    vocabulary ``keyed_sql``, ``hashed_sql`` and ``edges_sql`` record each link's rules in."""
    sql = f"SELECT DISTINCT coalesce(event, call) AS rule FROM {source} ORDER BY 1"
    return [row["rule"] for row in engine.rows(sql)]


def _rules_agg(names: list[str], index: str) -> str:
    # one bit per rule name, in sorted order: a link's rules are gathered as bits while grouping, which
    # costs next to nothing, where grouping by rule as well multiplied the rows to group
    return f"bitstring_agg({index}, 1, {max(len(names), 1)})"


def _rule_index(names: list[str]) -> str:
    return f"list_position({string_list_sql(names)}, coalesce(event, call))"


def keyed_sql(names: list[str], source: str = "events") -> str:
    """The account and anonymous identifier of the events of ``source``, with their evidence.

    Read from plain columns and grouped before any node id is spelt out, so the work is
    one pass over the log's narrow columns, one row per (user, anonymous id, channel kind).
    Only events naming both an account and an anonymous identifier link them, so only
    those give the first event's id and the rules (as bits over ``names``, see ``rule_names``).
    """
    both = "user_id IS NOT NULL AND anonymous_id IS NOT NULL"
    return f"""
    SELECT {_ACCOUNT} AS account, {_ANONYMOUS} AS anonymous, events, first_at, last_at, first_message_id, rules
    FROM (
        SELECT user_id, anonymous_id, CASE WHEN channel IN ('store', 'voice') THEN channel END AS channel,
               count(*) AS events, min(event_at) AS first_at, max(event_at) AS last_at,
               arg_min(message_id, event_at) FILTER (WHERE {both}) AS first_message_id,
               {_rules_agg(names, _rule_index(names))} FILTER (WHERE {both}) AS rules
        FROM {source}
        WHERE user_id IS NOT NULL OR anonymous_id IS NOT NULL
        GROUP BY ALL
    )"""


def hashed_sql(names: list[str], source: str = "events") -> str:
    """The keyed hashes the events of ``source`` name, as nodes linked to each event's primary identifier,
    one row per (primary, node) with the evidence of ``keyed_sql``.

    The engine stores every event's keyed hashes as node ids in the log's ``identifiers``
    column as it takes the event in (see ``omnithread.engine.tables.identifiers_sql``),
    so this reads a narrow list column and never parses JSON. Rows are grouped on the
    plain columns that decide the primary identifier (the account, else the anonymous id
    and its channel kind), which is spelt out only once per group. An event's own account
    is not linked to itself.
    """
    return f"""
    SELECT * FROM (
        SELECT coalesce({_ACCOUNT}, {_ANONYMOUS}) AS primary_node, node, events, first_at, last_at,
               first_message_id, rules
        FROM (
            SELECT user_id, anonymous_id, channel, node, count(*) AS events, min(event_at) AS first_at,
                   max(event_at) AS last_at, arg_min(message_id, event_at) AS first_message_id,
                   {_rules_agg(names, "rule")} AS rules
            FROM (
                SELECT user_id, CASE WHEN user_id IS NULL THEN anonymous_id END AS anonymous_id,
                       CASE WHEN user_id IS NULL AND channel IN ('store', 'voice') THEN channel END AS channel,
                       event_at, message_id, {_rule_index(names)} AS rule, unnest(identifiers) AS node
                FROM {source}
                WHERE identifiers IS NOT NULL AND (user_id IS NOT NULL OR anonymous_id IS NOT NULL)
            )
            GROUP BY ALL
        )
    )
    WHERE node <> primary_node"""


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


def edges_sql(keyed: str, hashed: str, names: list[str]) -> str:
    """One row per link between two identifiers, with its evidence: every identifier of an event
    is linked to the event's primary identifier (its account, else its anonymous identifier).

    A pair comes from ``keyed`` or from ``hashed``, rarely both (an account that is an
    email hash, and the same hash named on an event of its device), so one grouping
    merges them. The rules are the first eight names, in order, of the bits set. Few sets of
    rules occur, so each set the grouped rows bring is spelt out once and joined to the links;
    only a pair found in both (whose sets were merged) spells out its own.
    """

    def spell(bits: str) -> str:
        if not names:  # an empty log: typed, as an empty list has no element type to infer on every engine
            return "[]::VARCHAR[]"
        return (
            f"list_transform(list_filter(range(1, {len(names)} + 1), "
            f"lambda i: get_bit({bits}, (i - 1)::INTEGER) = 1)[:8], lambda i: ({string_list_sql(names)})[i])"
        )

    return f"""
WITH spelt AS (
    SELECT bits, {spell("bits")} AS rules
    FROM (SELECT rules AS bits FROM {keyed} WHERE rules IS NOT NULL UNION SELECT rules FROM {hashed})
)
SELECT a, b, events, first_seen_at, last_seen_at, first_message_id, coalesce(s.rules, {spell("l.bits")}, []) AS rules
FROM (
    SELECT a, b, sum(events)::BIGINT AS events, min(first_at) AS first_seen_at, max(last_at) AS last_seen_at,
           arg_min(first_message_id, first_at) AS first_message_id, bit_or(rules) AS bits
    FROM (
        SELECT least(account, anonymous) AS a, greatest(account, anonymous) AS b, events, first_at, last_at,
               first_message_id, rules
        FROM {keyed} WHERE account IS NOT NULL AND anonymous IS NOT NULL
        UNION ALL
        SELECT least(primary_node, node), greatest(primary_node, node), events, first_at, last_at, first_message_id,
               rules
        FROM {hashed}
    )
    GROUP BY 1, 2
) l LEFT JOIN spelt s ON s.bits = l.bits
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
