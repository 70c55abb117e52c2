"""The Fellegi-Sunter matcher: comparison levels, EM, blocking, and whole runs on made-up records."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from omnithread.identity.linkage import Comparison, Training, block_on, em, link, swapped


def _level(comparison: Comparison, a, b) -> int:
    con = duckdb.connect()
    con.execute(f'CREATE TABLE l AS SELECT ?::VARCHAR AS "{comparison.column}"', [a])
    con.execute(f'CREATE TABLE r AS SELECT ?::VARCHAR AS "{comparison.column}"', [b])
    return con.execute(f"SELECT {comparison.sql()} FROM l, r").fetchone()[0]


def test_levels_of_each_kind_of_comparison():
    exact = Comparison("postcode")
    assert [_level(exact, "AB1", "AB1"), _level(exact, "AB1", "AB2"), _level(exact, None, "AB1")] == [1, 0, -1]
    edits = Comparison("dob", "edits", (1, 2))
    assert edits.levels == 4
    assert _level(edits, "1980-01-02", "1980-01-02") == 3
    assert _level(edits, "1980-01-02", "1980-10-02") == 2  # a transposition is one edit
    assert _level(edits, "1980-01-02", "1981-01-03") == 1
    assert _level(edits, "1980-01-02", "1975-12-30") == 0
    name = Comparison("surname", "name")
    assert name.levels == 5
    # equal; one edit; two edits but Jaro-Winkler >= 0.92 (0.953); 0.8 to 0.92 (0.911); below; missing
    assert [
        _level(name, "smith", "smith"),
        _level(name, "smith", "smyth"),
        _level(name, "margaret", "margarite"),
        _level(name, "katherine", "kathrynne"),
        _level(name, "smith", "jones"),
        _level(name, "", None),
    ] == [4, 3, 2, 1, 0, -1]
    with pytest.raises(ValueError, match="fuzzy"):
        Comparison("x", "fuzzy")


def test_blocking_rules_are_join_conditions_on_both_records():
    assert block_on("dob", "surname") == 'l."dob" = r."dob" AND l."surname" = r."surname"'
    assert swapped("given", "surname") == 'l."given" = r."surname" AND l."surname" = r."given"'


def test_em_recovers_known_parameters_from_pattern_counts():
    rng = np.random.default_rng(3)
    m_true = [np.array([0.05, 0.95]), np.array([0.1, 0.2, 0.7]), np.array([0.02, 0.98])]
    u_true = [np.array([0.9, 0.1]), np.array([0.8, 0.15, 0.05]), np.array([0.99, 0.01])]
    n, share = 200_000, 0.2
    is_match = rng.random(n) < share
    columns = [
        np.where(is_match, rng.choice(len(m), n, p=m), rng.choice(len(u), n, p=u)) for m, u in zip(m_true, u_true)
    ]
    patterns, counts = np.unique(np.stack(columns, axis=1), axis=0, return_counts=True)
    start = [np.r_[np.full(len(m) - 1, 0.1 / (len(m) - 1)), 0.9] for m in m_true]
    posterior, learnt_share, m, iterations = em(patterns, counts, start, u_true, 0.5)
    assert learnt_share == pytest.approx(share, abs=0.01)
    for got, want in zip(m, m_true):
        np.testing.assert_allclose(got, want, atol=0.02)
    # a pattern agreeing everywhere is a match, one disagreeing everywhere is not
    everywhere = [list(p) for p in patterns]
    assert posterior[everywhere.index([1, 2, 1])] > 0.99 and posterior[everywhere.index([0, 0, 0])] < 0.01
    assert iterations < 500


FIRST = ["anna", "ben", "carl", "dora", "emil", "fay", "gus", "hana", "ivan", "jade", "kurt", "lena"]
LAST = ["smith", "jones", "brown", "taylor", "wilson", "evans", "thomas", "roberts", "walker", "wright"]


def _people(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "first": FIRST[rng.integers(len(FIRST))],
            "last": LAST[rng.integers(len(LAST))],
            "dob": f"19{rng.integers(40, 99)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
            "postcode": f"P{rng.integers(0, 10**6):06d}",
        }
        for _ in range(n)
    ]


def _typo(value: str, rng) -> str:
    i = int(rng.integers(0, len(value) - 1))
    return value[:i] + value[i + 1] + value[i] + value[i + 2 :]  # swap two letters


def _records(people: list[dict], copies: float, seed: int) -> tuple[pa.Table, set]:
    """Each person once, and a share of them again with one typo or a missing field."""
    rng = np.random.default_rng(seed)
    rows, truth = [], set()
    for i, person in enumerate(people):
        rows.append({"id": f"r{i}", **person})
        if rng.random() < copies:
            copy = dict(person)
            field = ["first", "last", "dob", "postcode"][rng.integers(4)]
            copy[field] = _typo(copy[field], rng) if rng.random() < 0.7 else None
            rows.append({"id": f"d{i}", **copy})
            truth.add(tuple(sorted((f"r{i}", f"d{i}"))))
    return pa.Table.from_pylist(rows), truth


MODEL = dict(
    unique_id="id",
    comparisons=[
        Comparison("first", "name"),
        Comparison("last", "name"),
        Comparison("dob", "edits", (1, 2)),
        Comparison("postcode", "edits", (1,)),
    ],
    blocking=[block_on("dob"), block_on("postcode"), block_on("first", "last")],
    training=[Training(("dob",)), Training(("postcode",))],
)


def test_duplicates_with_typos_and_gaps_are_found_and_the_run_is_repeatable():
    table, truth = _records(_people(3_000, 1), copies=0.3, seed=2)
    first = link([table], threshold=0.9, **MODEL)
    pairs = zip(first.pairs.column("id_l").to_pylist(), first.pairs.column("id_r").to_pylist())
    found = {tuple(sorted(p)) for p in pairs}
    correct = len(found & truth)
    assert correct / len(found) > 0.99 and correct / len(truth) > 0.97
    assert 0 < first.prior < 0.001
    again = link([table.take(np.random.default_rng(5).permutation(table.num_rows))], threshold=0.9, **MODEL)
    assert again.pairs.equals(first.pairs)  # same answer whatever the input order


def test_link_only_pairs_records_across_the_two_tables_only():
    people = _people(2_000, 4)
    table, truth = _records(people, copies=1.0, seed=5)
    ids = table.column("id").to_pylist()
    left = table.filter(pa.array([i.startswith("r") for i in ids]))
    right = table.filter(pa.array([i.startswith("d") for i in ids]))
    result = link([left, right], threshold=0.5, link_type="link_only", **MODEL)
    pairs = list(zip(result.pairs.column("id_l").to_pylist(), result.pairs.column("id_r").to_pylist()))
    assert all(a.startswith("r") and b.startswith("d") for a, b in pairs)
    correct = len({tuple(sorted(p)) for p in pairs} & truth)
    assert correct / len(truth) > 0.97 and correct / len(pairs) > 0.97


def test_bad_models_are_refused_with_the_reason():
    table, _ = _records(_people(100, 6), copies=0.2, seed=7)
    with pytest.raises(ValueError, match="'postcode' is left out of every training block"):
        link([table], threshold=0.9, **dict(MODEL, training=[Training(("postcode",))]))
    with pytest.raises(ValueError, match="link_only needs two tables"):
        link([table], threshold=0.9, link_type="link_only", **MODEL)
    with pytest.raises(ValueError, match="blocking rule"):
        link([table], threshold=0.9, **dict(MODEL, blocking=[]))
