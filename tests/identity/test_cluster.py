"""Connected components in the engine: the smallest node labels its component, in few rounds."""

from __future__ import annotations

import random

import pyarrow as pa

from omnithread.identity.cluster import UnionFind, connected_components


def _components(workspace, edges: list[tuple[str, str]]) -> tuple[dict[str, str], int]:
    engine = workspace.engine
    # numbered in the order of their names, as resolve numbers identifiers
    names = sorted({node for edge in edges for node in edge})
    number = {name: i for i, name in enumerate(names)}
    engine.register("_edges_in", pa.table({"a": [number[a] for a, _ in edges], "b": [number[b] for _, b in edges]}))
    engine.execute("CREATE OR REPLACE TEMP TABLE test_edges AS SELECT * FROM _edges_in")
    engine.unregister("_edges_in")
    rounds = connected_components(engine, "test_edges", "test_labels")
    return {names[r["id"]]: names[r["label"]] for r in engine.rows("SELECT id, label FROM test_labels")}, rounds


def _expected(edges):
    found = UnionFind()
    for a, b in edges:
        found.add(a)
        found.add(b)
        found.union(a, b)
    members: dict[str, list[str]] = {}
    for node in found.parent:
        members.setdefault(found.find(node), []).append(node)
    return {node: min(nodes) for nodes in members.values() for node in nodes}


def test_a_long_chain_a_star_and_random_graphs_get_the_smallest_node_as_label(workspace):
    chain = [(f"c{i:05d}", f"c{i + 1:05d}") for i in range(2_000)]
    random.Random(1).shuffle(chain)
    # numbered so that the smallest node sits in the middle of the chain's order
    chain += [("c01000", "a-start")]
    # a star whose smallest node is one of its leaves, and a pair linked only to each other
    star = [("hub", f"leaf{i}") for i in range(500)] + [("hub", "b-leaf"), ("zz2", "zz1")]
    rng = random.Random(2)
    scattered = [(f"n{rng.randrange(3_000)}", f"n{rng.randrange(3_000)}") for _ in range(2_000)]
    edges = chain + star + [(a, b) for a, b in scattered if a != b]
    labels, rounds = _components(workspace, edges)
    assert labels == _expected(edges)
    assert set(labels[n] for n in ("c00000", "c02000")) == {"a-start"}
    assert labels["hub"] == labels["leaf7"] == "b-leaf" and labels["zz2"] == "zz1"
    # hooking and pointer jumping: a 2,000-link chain settles in a handful of rounds, not 2,000
    assert rounds <= 15


def test_nodes_that_only_join_two_others_are_set_aside_without_changing_the_components(workspace):
    rng = random.Random(3)
    edges = []
    for person in range(300):  # a card and a token joined by many store visits, each with its own device
        card, token = f"card{person:03d}", f"token{person:03d}"
        for visit in range(rng.randrange(1, 6)):
            session = f"s{person:03d}-{visit}"
            edges += [(session, card), (session, token), (session, f"dev{person:03d}-{visit}")]
        if person % 7 == 0:  # a visit joining two persons' cards, and a chain of visits between visits
            edges += [(f"x{person:03d}", card), (f"x{person:03d}", f"card{(person + 1) % 300:03d}")]
            edges += [
                (f"y{person:03d}a", token),
                (f"y{person:03d}a", f"y{person:03d}b"),
                (f"y{person:03d}b", f"y{person:03d}c"),
                (f"y{person:03d}c", f"token{(person + 2) % 300:03d}"),
            ]
    rng.shuffle(edges)
    labels, _ = _components(workspace, edges)
    assert labels == _expected(edges)
    assert labels["card007"] == labels["card008"] == labels["token009"] == labels["s008-0"]
    assert labels["card000"] == labels["card001"] == labels["token002"] != labels["card003"]


def _reference_strongest_first(a_ids, b_ids, kinds, names, config):
    """The split with no shortcuts: every cluster counts every type, every link is tried in order."""
    most = [config.limits.get(kind, 1 << 62) for kind in config.priority]
    parent = list(range(len(names)))
    counts = [{kinds[node]: 1} for node in range(len(names))]

    def find(node):
        while parent[node] != node:
            node = parent[node]
        return node

    refused = []
    for index, (a, b) in enumerate(zip(a_ids, b_ids)):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        broken = [kind for kind, n in counts[rb].items() if counts[ra].get(kind, 0) + n > most[kind]]
        if broken:
            kind = min(broken)
            refused.append((index, f"limit: at most {most[kind]} {config.priority[kind]} per person"))
            continue
        for kind, n in counts[rb].items():
            counts[ra][kind] = counts[ra].get(kind, 0) + n
        parent[rb] = ra
    labels = {}
    for node in range(len(names)):
        root = find(node)
        labels[root] = min(labels.get(root, names[node]), names[node])
    return [labels[find(node)] for node in range(len(names))], refused


def test_the_split_refuses_and_labels_as_a_plain_union_find_does():
    from omnithread.identity.cluster import strongest_first
    from omnithread.identity.config import IdentityConfig

    config = IdentityConfig(limits={"account": 1, "loyalty_card": 2, "device": 3})
    rng = random.Random(4)
    for trial in range(20):
        n = rng.randrange(5, 200)
        kinds = [rng.choice([0, 4, 8, 9, 9, 9]) for _ in range(n)]  # account, card, device, many store visits
        links = {tuple(sorted(rng.sample(range(n), 2))) for _ in range(rng.randrange(1, 2 * n))}
        order = sorted(links, key=lambda link: rng.random())
        a_ids, b_ids = [a for a, _ in order], [b for _, b in order]
        names = [f"n{rng.randrange(10_000):05d}-{i}" for i in range(n)]
        assert strongest_first(a_ids, b_ids, kinds, names, config) == _reference_strongest_first(
            a_ids, b_ids, kinds, names, config
        ), trial
