"""Persons as connected components of the kept links, with the per-person limits enforced.

Components are computed set-based in the engine by label propagation on integer
node numbers with hooking and pointer jumping (see ``connected_components``).
Only components that break a limit (two accounts, say) are taken apart here, by
a union-find that adds their links strongest first and refuses any that would
break a limit; the refused links are returned with their reason. Links are sorted
on their own content, so the result does not depend on the order of the input.
"""

from __future__ import annotations

from collections import Counter

from omnithread.engine.base import Engine
from omnithread.identity.config import IdentityConfig

__all__ = ["connected_components", "split_over_limit", "UnionFind", "node_kind"]


def connected_components(engine: Engine, edges: str, labels: str, max_rounds: int = 200) -> int:
    """Write ``labels(node, label)`` for the nodes of table ``edges(a, b)``; return the rounds taken.

    Nodes are numbered in their sort order, so the smallest number in a component is its
    smallest node. Each round every node takes the smallest label among itself and its
    neighbours; the node a label names takes the smallest label any of its followers
    found (hooking); then every node takes the label of its label (pointer jumping).
    Labels only fall and always name a node of the same component, so when nothing
    changes each component carries its smallest node; hooking and jumping make that
    take a few rounds on long chains, where plain propagation needs one per link.
    """
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cc_nodes AS
        SELECT node, (row_number() OVER (ORDER BY node) - 1)::INTEGER AS id
        FROM (SELECT a AS node FROM {edges} UNION SELECT b FROM {edges})""")
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cc_edges AS
        SELECT na.id AS a, nb.id AS b FROM {edges} e
        JOIN _cc_nodes na ON na.node = e.a JOIN _cc_nodes nb ON nb.node = e.b""")
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE _cc_labels AS
        SELECT id, min(label) AS label
        FROM (SELECT a AS id, least(a, b) AS label FROM _cc_edges UNION ALL SELECT b, least(a, b) FROM _cc_edges)
        GROUP BY id""")
    rounds = 0
    while True:
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
        changed = engine.scalar(
            "SELECT count(*) FROM _cc_next n JOIN _cc_labels l USING (id) WHERE n.label <> l.label")
        engine.execute("CREATE OR REPLACE TEMP TABLE _cc_labels AS SELECT * FROM _cc_next")
        if not changed:
            break
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE {labels} AS
        SELECT n.node, m.node AS label FROM _cc_labels l
        JOIN _cc_nodes n ON n.id = l.id JOIN _cc_nodes m ON m.id = l.label""")
    for table in ("_cc_nodes", "_cc_edges", "_cc_labels", "_cc_next"):
        engine.execute(f"DROP TABLE IF EXISTS {table}")
    return rounds


def node_kind(node: str) -> str:
    return node.split(":", 1)[0]


class UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}
        self.counts: dict[str, Counter] = {}

    def add(self, node: str) -> None:
        if node not in self.parent:
            self.parent[node] = node
            self.counts[node] = Counter({node_kind(node): 1})

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
        self.counts[keep] += self.counts.pop(gone)


def split_over_limit(edges: list[dict], config: IdentityConfig) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Cluster one component's links strongest first, refusing merges that break a limit.

    ``edges`` are dicts with ``a``, ``b``, ``events`` and ``first_seen_at``. Returns a map
    from node to its cluster's label (the smallest node in it) and the refused links
    as (a, b, reason).
    """
    def strength(edge: dict) -> tuple:
        weaker = max(config.rank(node_kind(edge["a"])), config.rank(node_kind(edge["b"])))
        return weaker, -edge["events"], edge["first_seen_at"], edge["a"], edge["b"]

    found = UnionFind()
    refused = []
    for edge in sorted(edges, key=strength):
        a, b = edge["a"], edge["b"]
        found.add(a)
        found.add(b)
        ra, rb = found.find(a), found.find(b)
        if ra == rb:
            continue
        merged = found.counts[ra] + found.counts[rb]
        broken = [k for k, n in merged.items() if n > config.limits.get(k, n)]
        if broken:
            kind = broken[0]
            refused.append((a, b, f"limit: at most {config.limits[kind]} {kind} per person"))
            continue
        found.union(a, b)
    labels: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for node in found.parent:
        members.setdefault(found.find(node), []).append(node)
    for nodes in members.values():
        label = min(nodes)
        labels.update({node: label for node in nodes})
    return labels, refused
