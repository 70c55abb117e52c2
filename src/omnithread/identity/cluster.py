"""Persons as connected components of the kept links, with the per-person limits enforced.

Components are computed set-based in the engine by label propagation on integer
node numbers with hooking and pointer jumping (see ``connected_components``); the
numbers follow the order of the identifiers' names, so the smallest number is the
smallest name.
Only components that break a limit (two accounts, say) are taken apart here, by
a union-find that adds their links strongest first and refuses any that would
break a limit; the refused links are returned with their reason. Links are sorted
on their own content, so the result does not depend on the order of the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from omnithread.engine.base import Engine
from omnithread.identity.config import IdentityConfig

__all__ = [
    "connected_components",
    "split_over_limit",
    "add_strongest_first",
    "strongest_first",
    "link_strength",
    "UnionFind",
    "node_kind",
]


def connected_components(engine: Engine, edges: str, labels: str, max_rounds: int = 200) -> int:
    """Write ``labels(id, label)`` for the nodes of table ``edges(a, b)``, whose ends are integer node
    numbers; each node's label is the smallest number in its component. Returns the rounds taken.

    Nodes with a single link (most identifiers: a device seen with one account) take no
    part in the rounds: they are set aside and take their neighbour's label at the end,
    which at scale halves the tables every round reads; so do nodes that only join two
    others (see ``_cc_bridges``), whose neighbours are linked directly instead. Among the
    rest, each round every node takes the smallest label among itself and its neighbours;
    the node a label names takes the smallest label any of its followers found (hooking);
    then every node takes the label of its label (pointer jumping). Labels only fall and always name a node of
    the same component, so when nothing changes each component carries its smallest
    number; hooking and jumping make that take a few rounds on long chains, where plain
    propagation needs one per link. Last, each component's label becomes the smallest of
    its nodes, single-link nodes included.
    """
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cc_degree AS
        SELECT id, count(*) AS degree FROM (SELECT a AS id FROM {edges} UNION ALL SELECT b FROM {edges}) GROUP BY id""")
    # (leaf, its only neighbour) for every node with a single link
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cc_leaves AS
        SELECT e.a AS id, e.b AS neighbour FROM {edges} e JOIN _cc_degree d ON d.id = e.a WHERE d.degree = 1
        UNION ALL
        SELECT e.b, e.a FROM {edges} e JOIN _cc_degree d ON d.id = e.b WHERE d.degree = 1""")
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cc_core AS
        SELECT a, b FROM {edges}
        WHERE a NOT IN (SELECT id FROM _cc_leaves) AND b NOT IN (SELECT id FROM _cc_leaves)""")
    # (node, one neighbour) for every node that only joins two others: two links left once its leaves
    # are set aside, to two nodes that are not such nodes themselves (a store visit between a loyalty
    # card and a payment token). It is set aside as well and its two neighbours are linked directly,
    # once however many such nodes join them, which at scale halves the links the rounds read again.
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE _cc_bridges AS
        WITH two AS (
            SELECT id FROM (SELECT a AS id FROM _cc_core UNION ALL SELECT b FROM _cc_core) GROUP BY id
            HAVING count(*) = 2
        ), ends AS (
            SELECT a AS id, b AS other FROM _cc_core WHERE a IN (SELECT id FROM two)
            UNION ALL SELECT b, a FROM _cc_core WHERE b IN (SELECT id FROM two)
        )
        SELECT id, min(other) AS x, max(other) AS y FROM ends GROUP BY id
        HAVING min(other) NOT IN (SELECT id FROM two) AND max(other) NOT IN (SELECT id FROM two)""")
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE _cc_edges AS
        SELECT a, b FROM _cc_core WHERE a NOT IN (SELECT id FROM _cc_bridges) AND b NOT IN (SELECT id FROM _cc_bridges)
        UNION SELECT x, y FROM _cc_bridges""")
    engine.execute("DROP TABLE _cc_core")
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE _cc_labels AS SELECT id, id AS label FROM _cc_degree
        WHERE degree > 1 AND id NOT IN (SELECT id FROM _cc_bridges)""")
    rounds = 0
    # labels only fall, so their sum falls exactly when one changes: one scan, no join, per round
    total = engine.scalar("SELECT sum(label) FROM _cc_labels")
    while engine.scalar("SELECT count(*) FROM _cc_edges"):
        rounds += 1
        if rounds > max_rounds:  # labels fall every round, so this means a defect, never a slow graph
            raise RuntimeError(f"connected components did not settle in {max_rounds} rounds")
        engine.execute("""
            CREATE OR REPLACE TEMP TABLE _cc_next AS
            WITH proposals AS (
                SELECT id, label FROM _cc_labels
                UNION ALL SELECT e.a, l.label FROM _cc_edges e JOIN _cc_labels l ON l.id = e.b
                UNION ALL SELECT e.b, l.label FROM _cc_edges e JOIN _cc_labels l ON l.id = e.a
            ), best AS (SELECT id, min(label) AS label FROM proposals GROUP BY id
            ), hooked AS (
                SELECT id, min(label) AS label FROM (
                    SELECT * FROM best
                    UNION ALL SELECT l.label, b.label FROM _cc_labels l JOIN best b USING (id))
                GROUP BY id)
            SELECT h.id, least(h.label, j.label) AS label FROM hooked h JOIN hooked j ON j.id = h.label""")
        total, before = engine.scalar("SELECT sum(label) FROM _cc_next"), total
        engine.execute("DROP TABLE _cc_labels")
        engine.execute("ALTER TABLE _cc_next RENAME TO _cc_labels")
        if total == before:
            break
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE {labels} AS
        WITH joined AS (  -- every node of a component with more than one link
            SELECT id, label FROM _cc_labels
            UNION ALL SELECT j.id, l.label FROM _cc_bridges j JOIN _cc_labels l ON l.id = j.x
        ), held AS (  -- and the leaves hanging off them
            SELECT id, label FROM joined
            UNION ALL SELECT f.id, l.label FROM _cc_leaves f JOIN joined l ON l.id = f.neighbour
        ), smallest AS (SELECT label, min(id) AS first FROM held GROUP BY label)
        SELECT h.id, s.first AS label FROM held h JOIN smallest s USING (label)
        UNION ALL  -- two nodes linked only to each other
        SELECT id, least(id, neighbour) FROM _cc_leaves WHERE neighbour IN (SELECT id FROM _cc_leaves)""")
    for table in ("_cc_degree", "_cc_leaves", "_cc_bridges", "_cc_edges", "_cc_labels", "_cc_next"):
        engine.execute(f"DROP TABLE IF EXISTS {table}")
    return rounds


def node_kind(node: str) -> str:
    return node.split(":", 1)[0]


class UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def add(self, node: str) -> None:
        self.parent.setdefault(node, node)

    def find(self, node: str) -> str:
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        keep, gone = (ra, rb) if ra < rb else (rb, ra)
        self.parent[gone] = keep


def split_over_limit(edges: list[dict], config: IdentityConfig) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Cluster links strongest first, refusing merges that break a limit.

    ``edges`` are dicts with ``a``, ``b``, ``events`` and ``first_seen_at``. Returns a map
    from node to its cluster's label (the smallest node in it) and the refused links
    as (a, b, reason).
    """

    def strength(edge: dict) -> tuple:
        return link_strength(config, edge["a"], edge["b"], edge["events"], edge["first_seen_at"])

    ordered = sorted(edges, key=strength)
    return add_strongest_first([e["a"] for e in ordered], [e["b"] for e in ordered], config)


def link_strength(config: IdentityConfig, a: str, b: str, events: int, first_seen_at) -> tuple:
    """The sort key of a link, strongest first: the priority of its weaker end, then most events,
    then earliest seen, then the nodes themselves (so that ties never depend on input order)."""
    return max(config.rank(node_kind(a)), config.rank(node_kind(b))), -events, first_seen_at, a, b


def add_strongest_first(
    a_nodes: list[str], b_nodes: list[str], config: IdentityConfig
) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Union-find over links already sorted strongest first (see ``link_strength``), refusing any
    merge that would put more identifiers of a type in one cluster than ``config.limits`` allows.

    Returns each node's cluster label (its smallest node) and the refused links as (a, b, reason).
    """
    ids: dict[str, int] = {}
    for node in (*a_nodes, *b_nodes):
        ids.setdefault(node, len(ids))
    names = list(ids)
    kinds = [config.rank(node_kind(node)) for node in names]
    labels, refused = strongest_first([ids[a] for a in a_nodes], [ids[b] for b in b_nodes], kinds, names, config)
    return dict(zip(names, labels)), [(a_nodes[i], b_nodes[i], reason) for i, reason in refused]


def strongest_first(
    a_ids: list[int], b_ids: list[int], kinds: list[int], names: Sequence, config: IdentityConfig
) -> tuple[list, list[tuple[int, str]]]:
    """``add_strongest_first`` on node numbers: ``a_ids``/``b_ids`` are the links, sorted strongest
    first, between nodes ``0..len(names)-1``, whose type is ``kinds`` (their rank in
    ``config.priority``). Returns each node's label (its cluster's smallest name: names are
    strings, or numbers that sort as the strings do) and the refused links as (index, reason).

    Kept lean, since every link of every over-limit component passes through it: lists of
    numbers, and type counts only for clusters of more than one node. A link whose one end
    has no other link and a type without a limit (a store visit seen with one card) can
    never be refused nor change what a cluster holds of a limited type, so it only hangs
    its end on the other at the end.
    """
    most = [config.limits.get(kind, 1 << 62) for kind in config.priority]
    why = [f"limit: at most {most[kind]} {name} per person" for kind, name in enumerate(config.priority)]
    unlimited = np.array([kind not in config.limits for kind in config.priority], dtype=bool)
    a_all, b_all = np.asarray(a_ids, dtype=np.int64), np.asarray(b_ids, dtype=np.int64)
    degree = np.bincount(a_all, minlength=len(names)) + np.bincount(b_all, minlength=len(names))
    free_kind = unlimited[np.asarray(kinds, dtype=np.int64)] if len(names) else np.zeros(0, dtype=bool)
    hang_a = (degree[a_all] == 1) & free_kind[a_all]
    hang_b = (degree[b_all] == 1) & free_kind[b_all] & ~hang_a
    hanging = hang_a | hang_b
    order = np.flatnonzero(~hanging).tolist()
    a_ids, b_ids = a_all.tolist(), b_all.tolist()
    parent = list(range(len(names)))
    counts: dict[int, dict[int, int]] = {}
    refused = []
    for index in order:
        a, b = a_ids[index], b_ids[index]
        ra = a
        while parent[ra] != ra:
            ra = parent[ra]
        while parent[a] != ra:
            parent[a], a = ra, parent[a]
        rb = b
        while parent[rb] != rb:
            rb = parent[rb]
        while parent[b] != rb:
            parent[b], b = rb, parent[b]
        if ra == rb:
            continue
        held, joining = counts.get(ra), counts.get(rb)
        if joining is None or held is None:  # most links bring one lone identifier into a cluster
            if held is None:
                ra, rb, held, joining = rb, ra, joining, held
            kind = kinds[rb]
            if held is None:
                held = counts[ra] = {kinds[ra]: 1}
            n = held.get(kind, 0) + 1
            if n > most[kind]:
                refused.append((index, why[kind]))
                continue
            held[kind] = n
            parent[rb] = ra
            continue
        if len(held) < len(joining):
            ra, rb, held, joining = rb, ra, joining, held
        broken = [kind for kind, n in joining.items() if held.get(kind, 0) + n > most[kind]]
        if broken:
            refused.append((index, why[min(broken)]))
            continue
        for kind, n in joining.items():
            held[kind] = held.get(kind, 0) + n
        del counts[rb]
        parent[rb] = ra
    for leaf, other in zip(
        np.where(hang_a, a_all, b_all)[hanging].tolist(), np.where(hang_a, b_all, a_all)[hanging].tolist()
    ):
        parent[leaf] = other
    smallest: dict[int, int] = {}
    roots = []
    for node in range(len(names)):
        root = node
        while parent[root] != root:
            root = parent[root]
        roots.append(root)
        best = smallest.get(root)
        if best is None or names[node] < names[best]:
            smallest[root] = node
    return [names[smallest[root]] for root in roots], refused
