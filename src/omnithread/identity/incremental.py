"""Incremental updates: new events change the graph without a rebuild; removals split persons again.

After a full :func:`~omnithread.identity.resolve.resolve_identities`, ``update_identities``
reads only the events loaded since, adds their identifiers and links under the same
guards, and merges persons where a new link joins two: the person with more
identifiers survives with its id and the other id redirects to it. Removing an
identifier (erasure) or a link (a correction) splits its person into the
components that remain: the largest keeps the id. Every merge, refusal and split is
logged in ``identity_changes``, so a merge can be traced and undone by removing the
link that made it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa

from omnithread.engine.base import Engine
from omnithread.errors import NotFoundError
from omnithread.identity.cluster import UnionFind, node_kind
from omnithread.identity.config import IdentityConfig
from omnithread.identity.graph import edges_sql, hashed_sql, keyed_sql, nodes_sql, rule_names
from omnithread.identity.matching import match_new_records, record_ids_sql
from omnithread.identity.resolve import blocked_hashes, persons_sql
from omnithread.privacy import Pseudonymiser

__all__ = ["update_identities", "remove_identifier", "remove_link", "UpdateReport", "person_id_for"]

UTC = timezone.utc


def person_id_for(label: str) -> str:
    """The person id a cluster labelled by its smallest identifier gets (as the full rebuild names it)."""
    return "p_" + hashlib.md5(label.encode()).hexdigest()[:16]


@dataclass
class UpdateReport:
    events: int = 0
    new_identifiers: int = 0
    new_links: int = 0
    merges: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    blocked: int = 0
    splits: int = 0
    probabilistic_links: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__, seconds=round(self.seconds, 4))


class _Graph:
    """The identity tables, changed one identifier or link at a time."""

    def __init__(self, engine: Engine, config: IdentityConfig, blocked: set[str], report: UpdateReport):
        self.engine, self.config, self.blocked, self.report = engine, config, blocked, report
        self.now = datetime.now(UTC)

    def person_of(self, node: str) -> str | None:
        return self.engine.scalar("SELECT person_id FROM identity_map WHERE identifier = ?", [node])

    def log(self, change: str, person: str | None, other: str | None, a: str | None, b: str | None, reason: str):
        self.engine.execute(
            "INSERT INTO identity_changes VALUES (?, ?, ?, ?, ?, ?, ?)", [self.now, change, person, other, a, b, reason]
        )

    def refresh(self, persons: Sequence[str | None]) -> None:
        wanted = [p for p in dict.fromkeys(persons) if p]
        if not wanted:
            return
        if len(wanted) <= 50:
            marks = ", ".join("?" for _ in wanted)
            self.engine.execute(f"DELETE FROM persons WHERE person_id IN ({marks})", wanted)
            self.engine.execute(f"INSERT INTO persons {persons_sql(f'person_id IN ({marks})')}", wanted)
            return
        self.engine.register("_refreshed", pa.table({"person_id": pa.array(wanted, pa.string())}))
        try:
            self.engine.execute("DELETE FROM persons WHERE person_id IN (SELECT person_id FROM _refreshed)")
            self.engine.execute(f"INSERT INTO persons {persons_sql('person_id IN (SELECT person_id FROM _refreshed)')}")
        finally:
            self.engine.unregister("_refreshed")

    # -- identifiers ----------------------------------------------------------------------
    def blocked_reason(self, node: str) -> str | None:
        value = node.split(":", 1)[1]
        if value.lower() in self.config.blocked_values or re.fullmatch("0+", value) or node in self.blocked:
            return "blocked value"
        return None

    def add_nodes(self, nodes: str) -> None:
        """Every identifier of the new events at once (``nodes``: a table of ``nodes_sql`` rows): one already
        known has its counts and times brought up; a new one becomes a person of its own (or is held out,
        blocked). Set-based: a burst of new devices costs a few statements, not a few per device."""
        engine = self.engine
        engine.execute(f"""
            UPDATE identity_map SET events = identity_map.events + n.events,
                   first_seen_at = least(identity_map.first_seen_at, n.first_seen_at),
                   last_seen_at = greatest(identity_map.last_seen_at, n.last_seen_at)
            FROM {nodes} n WHERE identity_map.identifier = n.node""")
        fresh = engine.rows(
            f"SELECT * FROM {nodes} WHERE node NOT IN (SELECT identifier FROM identity_map) ORDER BY node"
        )
        if not fresh:
            return
        added = []
        for row in fresh:
            reason = self.blocked_reason(row["node"])
            added.append(
                {
                    "identifier": row["node"],
                    "identifier_type": node_kind(row["node"]),
                    "person_id": None if reason else person_id_for(row["node"]),
                    "blocked_reason": reason,
                    "events": row["events"],
                    "first_seen_at": row["first_seen_at"],
                    "last_seen_at": row["last_seen_at"],
                }
            )
        engine.register("_added_nodes", pa.Table.from_pylist(added))
        try:
            engine.execute(f"INSERT INTO identity_map SELECT {', '.join(added[0])} FROM _added_nodes")
        finally:
            engine.unregister("_added_nodes")
        self.report.new_identifiers += len(added)
        self.refresh([a["person_id"] for a in added])

    # -- links ----------------------------------------------------------------------------
    def edge_row(self, a: str, b: str) -> int | None:
        """The row number of link (a, b), if there is one: looked up by ``a`` alone, which the index
        on ``a`` serves (a condition on both ends would scan the table)."""
        for row in self.engine.rows("SELECT rowid AS row, b FROM identity_edges WHERE a = ?", [a]):
            if row["b"] == b:
                return row["row"]
        return None

    def add_link(self, edge: dict) -> None:
        a, b = edge["a"], edge["b"]
        row = self.edge_row(a, b)
        if row is not None:
            self.engine.execute(
                "UPDATE identity_edges SET events = events + ?, last_seen_at = greatest(last_seen_at, ?), "
                "rules = list_sort(list_distinct(list_concat(rules, ?)))[:8] WHERE rowid = ?",
                [edge["events"], edge["last_seen_at"], edge["rules"], row],
            )
            return
        self.engine.execute(
            "INSERT INTO identity_edges VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'kept', NULL, ?)",
            [
                a,
                b,
                edge["events"],
                edge["first_seen_at"],
                edge["last_seen_at"],
                edge["first_message_id"],
                edge["rules"],
                node_kind(a),
                node_kind(b),
                edge.get("score"),
            ],
        )
        self.report.new_links += 1
        self.join(a, b)

    def drop(self, a: str, b: str, reason: str) -> None:
        self.engine.execute(
            "UPDATE identity_edges SET status = 'dropped', reason = ? WHERE rowid = ?", [reason, self.edge_row(a, b)]
        )

    def join(self, a: str, b: str) -> None:
        pa, pb = self.person_of(a), self.person_of(b)
        if pa is None or pb is None:
            blocked = a if pa is None else b
            reason = self.engine.scalar("SELECT blocked_reason FROM identity_map WHERE identifier = ?", [blocked])
            self.drop(a, b, f"identifier blocked: {reason}")
            return
        for node, other in ((a, b), (b, a)):
            if node_kind(other) == "account" and node_kind(node) != "account" and self.too_many_accounts(node):
                return
        if pa == pb:
            return
        counts = self.engine.rows("SELECT * FROM persons WHERE person_id IN (?, ?)", [pa, pb])
        for kind, most in self.config.limits.items():
            if sum(row[kind] for row in counts) > most:
                reason = f"limit: at most {most} {kind} per person"
                self.drop(a, b, reason)
                self.report.refused[reason] = self.report.refused.get(reason, 0) + 1
                self.log("refused", pa, pb, a, b, reason)
                return
        self.merge(pa, pb, a, b, counts)

    def too_many_accounts(self, node: str) -> bool:
        most = self.config.max_accounts.get(node_kind(node))
        if most is None:
            return False
        accounts = self.engine.scalar(
            "SELECT count(DISTINCT CASE WHEN a = ? THEN b ELSE a END) FROM identity_edges "
            "WHERE (a = ? AND b_type = 'account') OR (b = ? AND a_type = 'account')",
            [node, node, node],
        )
        if accounts <= most:
            return False
        reason = f"linked to {accounts} accounts, more than {most} allowed for a {node_kind(node)}"
        block_identifier(self, node, reason)
        self.report.blocked += 1
        return True

    def merge(self, pa: str, pb: str, a: str, b: str, counts: list[dict]) -> None:
        sizes = {row["person_id"]: row["identifiers"] for row in counts}
        survivor, absorbed = sorted((pa, pb), key=lambda p: (-sizes.get(p, 0), p))
        self.engine.execute("UPDATE identity_map SET person_id = ? WHERE person_id = ?", [survivor, absorbed])
        self.engine.execute("UPDATE person_redirects SET person_id = ? WHERE person_id = ?", [survivor, absorbed])
        self.engine.execute("INSERT INTO person_redirects VALUES (?, ?, ?, 'merged')", [absorbed, survivor, self.now])
        self.log("merge", survivor, absorbed, a, b, "new link")
        self.report.merges += 1
        self.refresh([survivor, absorbed])

    # -- splits ---------------------------------------------------------------------------
    def split(self, person: str, reason: str) -> list[str]:
        """Split ``person`` into the components its kept links still hold; the largest keeps the id."""
        nodes = [
            r["identifier"]
            for r in self.engine.rows("SELECT identifier FROM identity_map WHERE person_id = ?", [person])
        ]
        if not nodes:
            self.refresh([person])
            return []
        found = UnionFind()
        for node in nodes:
            found.add(node)
        for edge in self.engine.rows(
            "SELECT a, b FROM identity_edges WHERE status = 'kept' AND a IN "
            "(SELECT identifier FROM identity_map WHERE person_id = ?) AND b IN "
            "(SELECT identifier FROM identity_map WHERE person_id = ?)",
            [person, person],
        ):
            found.union(edge["a"], edge["b"])
        parts: dict[str, list[str]] = {}
        for node in nodes:
            parts.setdefault(found.find(node), []).append(node)
        ordered = sorted(parts.values(), key=lambda part: (-len(part), min(part)))
        ids = [person]
        for part in ordered[1:]:
            new_id = person_id_for(min(part))
            marks = ", ".join("?" for _ in part)
            self.engine.execute(f"UPDATE identity_map SET person_id = ? WHERE identifier IN ({marks})", [new_id, *part])
            self.log("split", person, new_id, None, None, reason)
            ids.append(new_id)
        if len(ordered) > 1:
            self.report.splits += 1
        self.refresh(ids)
        return ids


def block_identifier(graph: _Graph, node: str, reason: str) -> list[str]:
    person = graph.person_of(node)
    graph.engine.execute(
        "UPDATE identity_map SET person_id = NULL, blocked_reason = ? WHERE identifier = ?", [reason, node]
    )
    graph.engine.execute(
        "UPDATE identity_edges SET status = 'dropped', reason = ? WHERE (a = ? OR b = ?) AND status = 'kept'",
        [f"identifier blocked: {reason}", node, node],
    )
    graph.log("block", person, None, node, None, reason)
    return graph.split(person, reason) if person else []


def _graph(engine: Engine, pseudonymiser: Pseudonymiser, config: IdentityConfig | None, report: UpdateReport):
    if not engine.has_table("identity_state"):
        raise NotFoundError("identity graph", "run a full `omnithread resolve` first")
    config = config or IdentityConfig()
    # point lookups by identifier, person and link end; a full resolve replaces the tables, and with
    # them these indexes, so the first update after it builds them again (seconds at a million people)
    for name, table, column in (
        ("identity_map_identifier", "identity_map", "identifier"),
        ("identity_map_person", "identity_map", "person_id"),
        ("identity_edges_a", "identity_edges", "a"),
        ("persons_person", "persons", "person_id"),
    ):
        engine.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})")
    return _Graph(engine, config, set(blocked_hashes(config, pseudonymiser)), report)


def update_identities(
    engine: Engine, pseudonymiser: Pseudonymiser, config: IdentityConfig | None = None
) -> UpdateReport:
    """Fold the events loaded since the last resolve into the graph and the persons."""
    started = time.perf_counter()
    report = UpdateReport()
    graph = _graph(engine, pseudonymiser, config, report)
    through = engine.scalar("SELECT resolved_through FROM identity_state")
    engine.execute(
        "CREATE OR REPLACE TEMP TABLE new_events AS SELECT * FROM events WHERE loaded_at > "
        "coalesce(CAST(? AS TIMESTAMPTZ), TIMESTAMPTZ '1970-01-01')",
        [through],
    )
    report.events = engine.scalar("SELECT count(*) FROM new_events")
    if report.events:
        names = rule_names(engine, "new_events")
        keyed, hashed = f"({keyed_sql(names, 'new_events')})", f"({hashed_sql(names, 'new_events')})"
        engine.execute(f"CREATE OR REPLACE TEMP TABLE new_nodes AS {nodes_sql(keyed, hashed)}")
        graph.add_nodes("new_nodes")
        for edge in engine.rows(edges_sql(keyed, hashed, names) + " ORDER BY first_seen_at, a, b"):
            graph.add_link(edge)
        if graph.config.match_threshold is not None:
            _match_new_records(engine, graph)
        engine.execute("UPDATE identity_state SET resolved_through = (SELECT max(loaded_at) FROM new_events)")
    report.seconds = time.perf_counter() - started
    return report


def _match_new_records(engine: Engine, graph: _Graph) -> None:
    """Score the sign-ups and account profiles the new events gave with the model the last full resolve
    learnt, and add the probable matches as links, under the same guards as every other link."""

    engine.execute(f"CREATE OR REPLACE TEMP TABLE new_records AS {record_ids_sql('new_events')}")
    if not engine.scalar("SELECT count(*) FROM new_records"):
        return
    assert graph.config.match_threshold is not None  # (called only when matching is on)
    for pair in match_new_records(engine, "new_records", graph.config.match_threshold):
        a, b = sorted((pair["id_l"], pair["id_r"]))
        graph.add_link(
            {
                "a": a,
                "b": b,
                "events": 0,
                "first_seen_at": None,
                "last_seen_at": None,
                "first_message_id": None,
                "rules": ["probabilistic match"],
                "score": float(pair["match_probability"]),
            }
        )
        graph.report.probabilistic_links += 1


def remove_identifier(
    engine: Engine,
    pseudonymiser: Pseudonymiser,
    node: str,
    reason: str = "removed",
    config: IdentityConfig | None = None,
) -> list[str]:
    """Take an identifier out of its person (erasure, correction); return the persons it leaves."""
    graph = _graph(engine, pseudonymiser, config, UpdateReport())
    if graph.engine.scalar("SELECT count(*) FROM identity_map WHERE identifier = ?", [node]) == 0:
        raise NotFoundError("identifier", node)
    return block_identifier(graph, node, reason)


def remove_link(
    engine: Engine,
    pseudonymiser: Pseudonymiser,
    a: str,
    b: str,
    reason: str = "removed",
    config: IdentityConfig | None = None,
) -> list[str]:
    """Drop the link between two identifiers and split their person if nothing else holds it together."""
    a, b = min(a, b), max(a, b)
    graph = _graph(engine, pseudonymiser, config, UpdateReport())
    if graph.edge_row(a, b) is None:
        raise NotFoundError("link", f"{a} - {b}")
    graph.drop(a, b, reason)
    person = graph.person_of(a)
    graph.log("unlink", person, None, a, b, reason)
    return graph.split(person, reason) if person else []
