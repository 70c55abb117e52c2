"""Resolve identities: from the event log to persons, guarded against over-merging.

``resolve_identities`` rebuilds three tables from the log: ``identity_edges`` (every
link with its evidence, kept or dropped with the reason), ``identity_map`` (every
identifier and the person it belongs to, or why it is blocked) and ``persons``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa

from omnithread.engine.base import Engine, string_list_sql
from omnithread.identity.cluster import connected_components, strongest_first
from omnithread.identity.config import NODE_TYPES, IdentityConfig
from omnithread.identity.graph import edges_sql, hashed_sql, keyed_sql, nodes_sql, rule_names
from omnithread.identity.matching import MatchingSkipped, build_attributes, learn_records, save_model
from omnithread.privacy import IdentifierError, IdentifierType, Pseudonymiser

__all__ = ["resolve_identities", "forget_persons", "ResolveReport", "blocked_hashes", "persons_sql"]


@dataclass
class ResolveReport:
    identifiers: dict[str, int] = field(default_factory=dict)
    persons: int = 0
    persons_with_account: int = 0
    links_kept: int = 0
    links_dropped: dict[str, int] = field(default_factory=dict)
    blocked_identifiers: int = 0
    rounds: int = 0
    split_components: int = 0
    probabilistic_links: int = 0
    probabilistic_skipped: str | None = None
    seconds: float = 0.0
    # seconds per phase: links (reading the log), matching, components, split, persons
    phases: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(
            self.__dict__,
            seconds=round(self.seconds, 3),
            phases={name: round(value, 3) for name, value in self.phases.items()},
        )

    def lap(self, phase: str, since: float) -> float:
        """Book the time since ``since`` to ``phase``; returns now, for the next phase."""
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - since
        return now


def blocked_hashes(config: IdentityConfig, pseudonymiser: Pseudonymiser) -> list[str]:
    """Node ids of the configured raw values (test emails, dummy phones) under this installation's key."""
    nodes = []
    for kind, values in config.blocked_raw.items():
        for value in values:
            try:
                nodes.append(f"{kind}:{pseudonymiser.hash(IdentifierType(kind), value)}")
            except IdentifierError:
                continue
    return nodes


def persons_sql(where: str = "") -> str:
    """One row per person from ``identity_map`` (optionally only those matching ``where``)."""
    kinds = ", ".join(f"count(*) FILTER (WHERE identifier_type = '{k}') AS {k}" for k in NODE_TYPES)
    condition = f" AND ({where})" if where else ""
    return f"""
        SELECT person_id, count(*) AS identifiers, {kinds},
               min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at
        FROM identity_map WHERE person_id IS NOT NULL{condition} GROUP BY person_id"""


def _limits_sql(mapping: dict[str, int]) -> str:
    return "(VALUES " + ", ".join(f"('{k}', {v})" for k, v in mapping.items()) + ") AS limits(kind, most)"


def _build_links(engine: Engine, config: IdentityConfig, blocked: list[str]) -> None:
    # the log's plain columns grouped, and the keyed hashes its events name (their identifiers column)
    names = rule_names(engine)
    engine.execute(f"CREATE OR REPLACE TEMP TABLE identity_keyed AS {keyed_sql(names)}")
    engine.execute(f"CREATE OR REPLACE TEMP TABLE identity_hashed AS {hashed_sql(names)}")
    # numbered in the order of their names, so that a node's number sorts as its name does: the components
    # and the split then work on numbers, and the smallest number names a component. Only this resolve reads
    # it, so it is never written to disk (where it would also keep erased hashes).
    engine.execute(
        "CREATE OR REPLACE TEMP TABLE identity_nodes AS SELECT row_number() OVER (ORDER BY node) - 1 AS id, * "
        f"FROM ({nodes_sql('identity_keyed', 'identity_hashed')})"
    )
    engine.execute(f"""
        CREATE OR REPLACE TABLE identity_edges AS
        SELECT *, split_part(a, ':', 1) AS a_type, split_part(b, ':', 1) AS b_type,
               'kept' AS status, NULL::VARCHAR AS reason, NULL::DOUBLE AS score
        FROM ({edges_sql("identity_keyed", "identity_hashed", names)})""")
    engine.execute("DROP TABLE identity_keyed")
    engine.execute("DROP TABLE identity_hashed")
    # values that never identify anyone
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE blocked_nodes AS
        SELECT node, 'blocked value' AS reason FROM identity_nodes
        WHERE list_contains({string_list_sql(config.blocked_values)}, lower(substr(node, strpos(node, ':') + 1)))
           OR regexp_full_match(substr(node, strpos(node, ':') + 1), '0+')
           OR list_contains({string_list_sql(blocked)}, node)""")
    # identifiers linked to implausibly many accounts
    engine.execute(f"""
        INSERT INTO blocked_nodes
        SELECT node, 'linked to ' || accounts || ' accounts, more than ' || most || ' allowed for a ' || kind
        FROM (
            SELECT node, split_part(node, ':', 1) AS kind, count(DISTINCT account) AS accounts
            FROM (SELECT b AS node, a AS account FROM identity_edges WHERE a_type = 'account'
                  UNION ALL SELECT a, b FROM identity_edges WHERE b_type = 'account')
            GROUP BY node
        ) JOIN {_limits_sql(config.max_accounts)} USING (kind)
        WHERE accounts > most AND node NOT IN (SELECT node FROM blocked_nodes)""")
    # one equality join per end: a join on "node IN (a, b)" cannot hash and compares every pair
    for end in ("a", "b"):
        engine.execute(f"""
            UPDATE identity_edges SET status = 'dropped', reason = 'identifier blocked: ' || bn.reason
            FROM blocked_nodes bn WHERE bn.node = identity_edges.{end} AND identity_edges.status = 'kept'""")


def _add_probabilistic_links(engine: Engine, config: IdentityConfig) -> int:
    """Link store sign-ups and online accounts that share no key but are probably one person."""

    build_attributes(engine)
    assert config.match_threshold is not None  # (called only when matching is on)
    # on a distributed engine the pairs are blocked, compared and counted there; in-memory otherwise
    learnt = learn_records(
        engine.query("SELECT * FROM person_attributes"),
        config.match_threshold,
        engine=engine if engine.distributed else None,
    )
    save_model(engine, learnt)
    matches = learnt.pairs.to_pylist()
    if not matches:
        return 0
    engine.register(
        "_matches",
        pa.table(
            {
                "a": [min(m["id_l"], m["id_r"]) for m in matches],
                "b": [max(m["id_l"], m["id_r"]) for m in matches],
                "score": [float(m["match_probability"]) for m in matches],
            }
        ),
    )
    try:
        engine.execute("""
            INSERT INTO identity_edges
            SELECT m.a, m.b, 0, NULL, NULL, NULL, ['probabilistic match'], split_part(m.a, ':', 1),
                   split_part(m.b, ':', 1),
                   CASE WHEN coalesce(ba.node, bb.node) IS NULL THEN 'kept' ELSE 'dropped' END,
                   'identifier blocked: ' || coalesce(ba.reason, bb.reason), m.score
            FROM _matches m
            LEFT JOIN blocked_nodes ba ON ba.node = m.a
            LEFT JOIN blocked_nodes bb ON bb.node = m.b
            WHERE NOT EXISTS (SELECT 1 FROM identity_edges e WHERE e.a = m.a AND e.b = m.b)""")
    finally:
        engine.unregister("_matches")
    return len(matches)


def _split_components(engine: Engine, config: IdentityConfig) -> int:
    """Take apart every component that breaks a limit; all at once, so the cost is one pass.

    The links of those components leave the engine as two columns of node numbers, already sorted
    strongest first (the order of ``link_strength``: node numbers sort as node names do), so the
    union-find only walks them once.
    """
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE over_limit AS
        SELECT DISTINCT label FROM (
            SELECT l.label, split_part(n.node, ':', 1) AS kind, count(*) AS n
            FROM identity_labels l JOIN identity_nodes n ON n.id = l.id GROUP BY 1, 2
        ) JOIN {_limits_sql(config.limits)} USING (kind) WHERE n > most""")
    components = engine.scalar("SELECT count(*) FROM over_limit")
    if not components:
        return 0

    def rank(kind: str) -> str:
        return f"CASE {kind} " + " ".join(f"WHEN '{k}' THEN {config.rank(k)}" for k in config.priority) + " END"

    # numbered again from 0, in the order of the node numbers (a number of its own, not the row's: inside a
    # transaction, as in an erasure, the rows of a new table are numbered from 2^55)
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE _split_nodes AS
        SELECT l.id, {rank("split_part(n.node, ':', 1)")} AS kind, (row_number() OVER (ORDER BY l.id) - 1) AS number
        FROM identity_labels l JOIN identity_nodes n ON n.id = l.id
        WHERE l.label IN (SELECT label FROM over_limit)""")
    nodes = engine.query("SELECT id, kind FROM _split_nodes ORDER BY number")
    links = engine.query(f"""
        SELECT k.a_node, k.b_node, sa.number::INTEGER AS a, sb.number::INTEGER AS b
        FROM kept_edges k JOIN _split_nodes sa ON sa.id = k.a JOIN _split_nodes sb ON sb.id = k.b
        JOIN identity_edges e ON e.a = k.a_node AND e.b = k.b_node
        ORDER BY greatest({rank("e.a_type")}, {rank("e.b_type")}), e.events DESC, e.first_seen_at, k.a, k.b""")
    ids = nodes.column("id").to_pylist()
    labels, refused = strongest_first(
        links.column("a").to_pylist(), links.column("b").to_pylist(), nodes.column("kind").to_pylist(), ids, config
    )
    ends = list(zip(links.column("a_node").to_pylist(), links.column("b_node").to_pylist()))
    del nodes, links
    engine.execute("DROP TABLE _split_nodes")
    engine.register(
        "_refused",
        pa.table(
            {
                "a": [ends[i][0] for i, _ in refused],
                "b": [ends[i][1] for i, _ in refused],
                "reason": [reason for _, reason in refused],
            },
            schema=pa.schema([("a", pa.string()), ("b", pa.string()), ("reason", pa.string())]),
        ),
    )
    engine.register(
        "_relabel",
        pa.table({"id": ids, "label": labels}, schema=pa.schema([("id", pa.int64()), ("label", pa.int64())])),
    )
    try:
        engine.execute("""
            UPDATE identity_edges SET status = 'dropped', reason = r.reason FROM _refused r
            WHERE r.a = identity_edges.a AND r.b = identity_edges.b""")
        engine.execute("UPDATE identity_labels SET label = r.label FROM _relabel r WHERE r.id = identity_labels.id")
    finally:
        engine.unregister("_refused")
        engine.unregister("_relabel")
    return components


def _name_persons(engine: Engine) -> None:
    """Give each cluster a person id, keeping the ids of the previous graph where the clusters match.

    A previous person's id goes to the new cluster holding most of its identifiers (ties to the
    smaller label); a cluster takes the previous id it shares most identifiers with, and otherwise
    a new id derived from its smallest identifier.
    """
    previous = engine.has_table("identity_map")
    # how many identifiers each new cluster shares with each previous person
    engine.execute(
        "CREATE OR REPLACE TEMP TABLE person_overlap AS "
        + (
            "SELECT l.label, m.person_id AS old_person_id, count(*) AS shared FROM identity_map m "
            "JOIN identity_nodes n ON n.node = m.identifier JOIN identity_labels l ON l.id = n.id "
            "WHERE m.person_id IS NOT NULL GROUP BY 1, 2"
            if previous
            else "SELECT NULL::BIGINT AS label, NULL::VARCHAR AS old_person_id, 0 AS shared WHERE false"
        )
    )
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE person_names AS
        WITH claimed AS (
            SELECT * FROM person_overlap
            QUALIFY row_number() OVER (PARTITION BY old_person_id ORDER BY shared DESC, label) = 1
        ), kept AS (
            SELECT * FROM claimed QUALIFY row_number() OVER (PARTITION BY label ORDER BY shared DESC, old_person_id) = 1
        )
        SELECT l.label, coalesce(k.old_person_id, 'p_' || left(md5(n.node), 16)) AS person_id
        FROM (SELECT DISTINCT label FROM identity_labels) l JOIN identity_nodes n ON n.id = l.label
        LEFT JOIN kept k USING (label)""")


def _redirect_retired(engine: Engine) -> None:
    """Previous ids no cluster kept redirect to where most of their identifiers went."""
    engine.execute("""
        INSERT INTO person_redirects
        SELECT o.old_person_id, n.person_id, now() AS redirected_at, 'merged on rebuild' AS reason
        FROM person_overlap o
        JOIN person_names n USING (label)
        WHERE o.old_person_id NOT IN (SELECT person_id FROM persons)
        QUALIFY row_number() OVER (PARTITION BY o.old_person_id ORDER BY o.shared DESC, n.person_id) = 1""")
    engine.execute("""
        UPDATE person_redirects SET person_id = r.person_id FROM person_redirects r
        WHERE person_redirects.person_id = r.old_person_id AND r.reason = 'merged on rebuild'""")


def resolve_identities(
    engine: Engine, pseudonymiser: Pseudonymiser, config: IdentityConfig | None = None
) -> ResolveReport:
    """Rebuild the identity graph and the persons from the whole event log."""
    config = config or IdentityConfig()
    started = time.perf_counter()
    report = ResolveReport()
    _build_links(engine, config, blocked_hashes(config, pseudonymiser))
    lap = report.lap("links", started)
    if config.match_threshold is not None:
        try:
            report.probabilistic_links = _add_probabilistic_links(engine, config)
        except MatchingSkipped as skipped:
            report.probabilistic_skipped = str(skipped)
            engine.execute("DROP TABLE IF EXISTS identity_match_model")  # nothing learnt to score new records with
    else:
        engine.execute("DROP TABLE IF EXISTS identity_match_model")
    lap = report.lap("matching", lap)
    # the kept links between node numbers, with the names of their ends (a link's key)
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE kept_edges AS
        SELECT e.a AS a_node, e.b AS b_node, na.id AS a, nb.id AS b FROM identity_edges e
        JOIN identity_nodes na ON na.node = e.a JOIN identity_nodes nb ON nb.node = e.b
        WHERE e.status = 'kept'""")
    report.rounds = connected_components(engine, "kept_edges", "identity_labels")
    # identifiers that no kept link touches are persons of their own
    engine.execute("""
        INSERT INTO identity_labels
        SELECT id, id FROM identity_nodes
        WHERE id NOT IN (SELECT id FROM identity_labels) AND node NOT IN (SELECT node FROM blocked_nodes)""")
    lap = report.lap("components", lap)
    report.split_components = _split_components(engine, config)
    engine.execute("DROP TABLE kept_edges")
    lap = report.lap("split", lap)
    engine.execute(
        "CREATE TABLE IF NOT EXISTS person_redirects (old_person_id VARCHAR, person_id VARCHAR, "
        "redirected_at TIMESTAMPTZ, reason VARCHAR)"
    )
    engine.execute(
        "CREATE TABLE IF NOT EXISTS identity_changes (changed_at TIMESTAMPTZ, change VARCHAR, "
        "person_id VARCHAR, other_person_id VARCHAR, a VARCHAR, b VARCHAR, reason VARCHAR)"
    )
    _name_persons(engine)
    engine.execute("""
        CREATE OR REPLACE TABLE identity_map AS
        SELECT n.node AS identifier, split_part(n.node, ':', 1) AS identifier_type, ids.person_id,
               b.reason AS blocked_reason, n.events, n.first_seen_at, n.last_seen_at
        FROM identity_nodes n LEFT JOIN identity_labels l ON l.id = n.id LEFT JOIN person_names ids USING (label)
        LEFT JOIN blocked_nodes b USING (node)""")
    engine.execute(f"CREATE OR REPLACE TABLE persons AS {persons_sql()}")
    _redirect_retired(engine)
    engine.execute("CREATE OR REPLACE TABLE identity_state AS SELECT max(loaded_at) AS resolved_through FROM events")
    report.lap("persons", lap)
    report.identifiers = {
        r["identifier_type"]: r["n"]
        for r in engine.rows("SELECT identifier_type, count(*) AS n FROM identity_map GROUP BY 1 ORDER BY 2 DESC")
    }
    report.persons = engine.scalar("SELECT count(*) FROM persons")
    report.persons_with_account = engine.scalar("SELECT count(*) FROM persons WHERE account > 0")
    report.blocked_identifiers = engine.scalar("SELECT count(*) FROM identity_map WHERE blocked_reason IS NOT NULL")
    report.links_kept = engine.scalar("SELECT count(*) FROM identity_edges WHERE status = 'kept'")
    report.links_dropped = {
        r["reason"]: r["n"]
        for r in engine.rows(
            "SELECT reason, count(*) AS n FROM identity_edges WHERE status = 'dropped' GROUP BY 1 ORDER BY 2 DESC, 1"
        )
    }
    for table in ("identity_nodes", "identity_labels", "person_names", "person_overlap", "over_limit", "blocked_nodes"):
        engine.execute(f"DROP TABLE IF EXISTS {table}")  # temporary tables hold memory until dropped
    report.seconds = time.perf_counter() - started
    return report


def forget_persons(engine: Engine, pseudonymiser: Pseudonymiser, person_ids: set[str], values: list[str]) -> int:
    """After a person's events are gone: rebuild the graph and the persons from what is left, so nobody left
    behind inherits their ids (the rebuild names those groups anew) and people they had been joined with split
    off again, and delete the history rows (redirects, changes) that name them. Returns how many history rows
    were deleted."""
    marks = ", ".join("?" for _ in person_ids)
    engine.execute(f"UPDATE identity_map SET person_id = NULL WHERE person_id IN ({marks})", [*person_ids])
    resolve_identities(engine, pseudonymiser)
    deleted = 0
    for table, cols in (
        ("person_redirects", ("old_person_id", "person_id")),
        ("identity_changes", ("person_id", "other_person_id")),
    ):
        where = " OR ".join(f"{c} IN ({marks})" for c in cols)
        deleted += engine.delete_where(table, where, [*person_ids] * len(cols))
    if values:
        value_marks = ", ".join("?" for _ in values)
        deleted += engine.delete_where(
            "identity_changes",
            f"split_part(a, ':', 2) IN ({value_marks}) OR split_part(b, ':', 2) IN ({value_marks})",
            values * 2,
        )
    return deleted
