"""Fellegi-Sunter record linkage in the engine, with parameters learnt by EM on comparison patterns.

Candidate pairs come from blocking rules (equality on one or more columns, or any
join condition between ``l`` and ``r``), united and deduplicated. Each pair is
compared column by column into discrete levels (exact, close by edit distance or
Jaro-Winkler, different, or missing). The pairs are then grouped by their pattern
of levels: even millions of candidate pairs share a few hundred patterns, so
expectation maximisation runs on the pattern counts in NumPy in milliseconds,
however many pairs there are (the approach of fastLink).

u (how often non-matches reach each level) is fixed before EM: the exact level from
the value counts over all records, the lower levels from record pairs drawn at
random with a fixed seed, so the result is the same on every run. m (the same among
matches) is learnt by EM on training blocks, each leaving out the columns its pairs
agree on by construction; the prior (the share of matches among all possible pairs)
by EM over every pair with m and u fixed. A pair's match probability is the
posterior of its pattern; a missing value is evidence of neither.

Everything row-sized runs in DuckDB; nothing but the pattern table comes into
Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from omnithread.engine import Engine, scratch_engine

__all__ = ["Comparison", "Training", "block_on", "swapped", "link", "score", "LinkResult", "em"]

NAME_SIMILARITY = (0.92, 0.8)


def _q(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


@dataclass(frozen=True)
class Comparison:
    """How one column of two records is compared; levels run from 0 (different) upwards.

    ``kind``: ``exact`` (equal or not); ``edits`` (equal, then within each of
    ``thresholds`` Damerau-Levenshtein edits); ``name`` (equal, one edit, then
    Jaro-Winkler similarity at or above each of ``thresholds``, 0.92 and 0.8 by
    default).
    """

    column: str
    kind: str = "exact"
    thresholds: tuple = ()

    def __post_init__(self) -> None:
        if self.kind not in ("exact", "edits", "name"):
            raise ValueError(f"comparison kind must be exact, edits or name, not {self.kind!r} (column {self.column})")

    @property
    def levels(self) -> int:
        if self.kind == "exact":
            return 2
        if self.kind == "edits":
            return 2 + len(self.thresholds)
        return 3 + len(self.thresholds or NAME_SIMILARITY)

    def sql(self, left: str = "l", right: str = "r") -> str:
        """A CASE giving the level of the pair (-1 when either value is missing)."""
        a, b = f"{left}.{_q(self.column)}", f"{right}.{_q(self.column)}"
        top = self.levels - 1
        cases = [f"WHEN {a} IS NULL OR {b} IS NULL THEN -1", f"WHEN {a} = {b} THEN {top}"]
        if self.kind == "edits":
            for i, edits in enumerate(self.thresholds):
                cases.append(f"WHEN {_within_edits(a, b, int(edits))} THEN {top - 1 - i}")
        elif self.kind == "name":
            cases.append(f"WHEN {_within_edits(a, b, 1)} THEN {top - 1}")
            for i, similarity in enumerate(self.thresholds or NAME_SIMILARITY):
                cases.append(f"WHEN jaro_winkler_similarity({a}, {b}) >= {float(similarity)} THEN {top - 2 - i}")
        return "CASE " + " ".join(cases) + " ELSE 0 END"


def _within_edits(a: str, b: str, edits: int) -> str:
    """Damerau-Levenshtein distance at most ``edits``, computed only where plain Levenshtein cannot decide.

    Levenshtein never counts fewer edits than Damerau-Levenshtein, nor more than twice as many,
    and is several times cheaper.
    """
    return (
        f"(CASE WHEN levenshtein({a}, {b}) <= {edits} THEN true WHEN levenshtein({a}, {b}) > {2 * edits} "
        f"THEN false ELSE damerau_levenshtein({a}, {b}) <= {edits} END)"
    )


def block_on(*columns: str) -> str:
    """A blocking rule: the two records are equal on every one of ``columns``."""
    return " AND ".join(f"l.{_q(c)} = r.{_q(c)}" for c in columns)


def swapped(first: str, second: str) -> str:
    """A blocking rule for two columns entered the wrong way round (given name and surname)."""
    return f"l.{_q(first)} = r.{_q(second)} AND l.{_q(second)} = r.{_q(first)}"


@dataclass(frozen=True)
class Training:
    """Pairs equal on ``block`` columns, on which m is learnt for the other comparisons.

    The comparisons of the block's columns, and of ``ignore`` (columns that agree
    for other reasons within the block, such as the street within a postcode), are
    left out of that fit.
    """

    block: tuple[str, ...]
    ignore: tuple[str, ...] = ()


@dataclass
class LinkResult:
    """Pairs at or above the threshold, and what was learnt."""

    pairs: pa.Table  # id_l, id_r, match_probability
    candidates: int
    patterns: int
    prior: float  # share of matches among all possible pairs
    m: list[np.ndarray]
    u: list[np.ndarray]
    iterations: int


def _posterior(patterns: np.ndarray, m: list[np.ndarray], u: list[np.ndarray], share: float) -> np.ndarray:
    log_ratio = np.full(len(patterns), np.log(share) - np.log1p(-share))
    for k in range(patterns.shape[1]):
        seen = patterns[:, k] >= 0
        level = patterns[seen, k]
        log_ratio[seen] += np.log(m[k][level]) - np.log(u[k][level])
    return 1.0 / (1.0 + np.exp(-np.clip(log_ratio, -700, 700)))


def em(
    patterns: np.ndarray,
    counts: np.ndarray,
    m: list[np.ndarray],
    u: list[np.ndarray],
    share: float,
    *,
    learn_m: bool = True,
    total_pairs: float | None = None,
    max_iterations: int = 500,
    tolerance: float = 1e-9,
) -> tuple[np.ndarray, float, list[np.ndarray], int]:
    """Expectation maximisation on pattern counts with u held fixed.

    ``patterns`` is (P, K) of levels, -1 where the comparison is missing or left out;
    ``counts`` the pairs per pattern. Learns the match share (over ``total_pairs``
    when given, the pairs not among the candidates counting as non-matches) and,
    when ``learn_m``, m. Returns (posterior per pattern, share, m, iterations).
    """
    counts = counts.astype(float)
    m = [np.asarray(x, dtype=float).copy() for x in m]
    floor = 1e-12
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - read after the loop: how many it took
        posterior = _posterior(patterns, m, u, share)
        weight = counts * posterior
        new_share = min(max(float(weight.sum() / (total_pairs or counts.sum())), floor), 1 - 1e-6)
        change = abs(new_share - share) / share
        share = new_share
        if learn_m:
            for k in range(len(m)):
                seen = patterns[:, k] >= 0
                if not seen.any():
                    continue
                new_m = np.bincount(patterns[seen, k], weights=weight[seen], minlength=len(m[k])) + floor
                new_m /= new_m.sum()
                change = max(change, float(np.abs(new_m - m[k]).max()))
                m[k] = new_m
        if change < tolerance:
            break
    return _posterior(patterns, m, u, share), share, m, iterations


def _records(con: Engine, tables: list[pa.Table], unique_id: str, columns: list[str]) -> None:
    parts = []
    for i, table in enumerate(tables):
        name = f"_source_{i}"
        con.register(name, table)
        parts.append(
            f"SELECT {i} AS _source, CAST({_q(unique_id)} AS VARCHAR) AS _id, "
            + ", ".join(_q(c) for c in columns)
            + f" FROM {name}"
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _records AS SELECT row_number() OVER (ORDER BY _source, _id) - 1 "
        "AS _row, * FROM (" + " UNION ALL ".join(parts) + ")"
    )


def _u_levels(
    con: Engine, comparisons: list[Comparison], link_type: str, sizes: list[int], pairs: int, seed: int
) -> list[np.ndarray]:
    """Level shares among non-matching pairs, taken as all pairs (almost all are non-matches).

    The exact level's share is computed from the value counts over all records; how
    the rest divide between the lower levels is measured on ``pairs`` record pairs
    drawn at random with ``seed``.
    """
    rng = np.random.default_rng(seed)
    if link_type == "link_only":
        left = rng.integers(0, sizes[0], pairs)
        right = sizes[0] + rng.integers(0, sizes[1], pairs)
    else:
        total = sum(sizes)
        left, right = rng.integers(0, total, pairs), rng.integers(0, total, pairs)
        keep = left != right
        left, right = left[keep], right[keep]
    con.register("_random_pairs", pa.table({"a": left, "b": right}))
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _random_levels AS SELECT {_levels(comparisons)} FROM _random_pairs p
                    JOIN _records l ON l._row = p.a JOIN _records r ON r._row = p.b""")
    con.unregister("_random_pairs")
    shares = []
    for k, comparison in enumerate(comparisons):
        column = _q(comparison.column)
        if link_type == "link_only":
            exact = con.scalar(f"""
                WITH v AS (SELECT {column} AS v, count(*) FILTER (WHERE _source = 0) AS x,
                                  count(*) FILTER (WHERE _source = 1) AS y
                           FROM _records WHERE {column} IS NOT NULL GROUP BY 1)
                SELECT sum(x * y) / (sum(x) * sum(y)) FROM v""")
        else:
            exact = con.scalar(f"""
                WITH v AS (SELECT count(*)::DOUBLE AS n FROM _records WHERE {column} IS NOT NULL GROUP BY {column})
                SELECT sum(n * (n - 1)) / (sum(n) * (sum(n) - 1)) FROM v""")
        top = comparison.levels - 1
        exact = min(max(float(exact or 0.0), 1.0 / max(sum(sizes), 2) ** 2), 0.5)
        rest = np.ones(top)
        for row in con.rows(
            f"SELECT c{k} AS level, count(*) AS n FROM _random_levels WHERE c{k} BETWEEN 0 AND {top - 1} GROUP BY 1"
        ):
            rest[row["level"]] += row["n"]
        shares.append(np.append(rest / rest.sum() * (1 - exact), exact))
    return shares


def _levels(comparisons: list[Comparison], left_out: frozenset[str] | set[str] = frozenset()) -> str:
    """The level columns c0, c1, ... of a pair of records ``l`` and ``r`` (-1 for a comparison left out)."""
    return ", ".join(
        ("-1" if c.column in left_out else f"({c.sql()})") + f"::TINYINT AS c{k}" for k, c in enumerate(comparisons)
    )


def _patterns(
    con: Engine, pairs: str, comparisons: list[Comparison], left_out: frozenset[str] | set[str] = frozenset()
) -> pa.Table:
    """Counts of each pattern of levels (c0, c1, ..., n) among the pairs ``pairs`` (a relation of a, b)."""
    return con.query(f"""
        SELECT {_levels(comparisons, left_out)}, count(*) AS n
        FROM ({pairs}) p JOIN _records l ON l._row = p.a JOIN _records r ON r._row = p.b
        GROUP BY ALL ORDER BY ALL""")


def _patterns_within(
    con: Engine, comparisons: list[Comparison], block: tuple[str, ...], left_out: set[str]
) -> pa.Table:
    """``_patterns`` of the pairs equal on ``block``, when a blocking rule already found them all: read from
    the compared candidates (table ``_compared``), where equal means the top level of each column."""
    keys = ", ".join(
        ("-1" if c.column in left_out else f"c{k}") + f"::TINYINT AS c{k}" for k, c in enumerate(comparisons)
    )
    equal = " AND ".join(f"c{k} = {c.levels - 1}" for k, c in enumerate(comparisons) if c.column in block)
    sql = f"SELECT {keys}, count(*) AS n FROM _compared WHERE {equal} GROUP BY ALL ORDER BY ALL"
    return con.query(sql)


def _matrix(table: pa.Table, k: int) -> np.ndarray:
    return np.stack([table.column(f"c{i}").to_numpy().astype(np.int64) for i in range(k)], axis=1)


def link(
    tables: list[pa.Table],
    unique_id: str,
    comparisons: list[Comparison],
    blocking: list[str],
    training: list[Training],
    threshold: float,
    link_type: str = "dedupe_only",
    u_pairs: int = 100_000,
    seed: int = 7,
    engine: Engine | None = None,
) -> LinkResult:
    """Score the candidate pairs of ``tables`` and keep those with match probability >= ``threshold``.

    ``link_type`` is ``dedupe_only`` (one table, or several read as one) or ``link_only``
    (two tables; pairs across them only). u comes from ``u_pairs`` random pairs, m from
    EM on each ``training`` block (averaged where a comparison is learnt in several),
    and the prior from EM over all possible pairs with m and u fixed.
    """
    if link_type not in ("dedupe_only", "link_only"):
        raise ValueError(f"link_type must be dedupe_only or link_only, not {link_type!r}")
    if link_type == "link_only" and len(tables) != 2:
        raise ValueError(f"link_only needs two tables, got {len(tables)}")
    if not blocking:
        raise ValueError("at least one blocking rule is needed")
    learnt = {c.column for t in training for c in comparisons if c.column not in t.block + t.ignore}
    for c in comparisons:
        if c.column not in learnt:
            raise ValueError(f"comparison {c.column!r} is left out of every training block, so m cannot be learnt")
    columns = sorted(
        {c.column for c in comparisons} | {name for table in tables for name in table.column_names if name != unique_id}
    )
    sizes = [t.num_rows for t in tables]
    total_pairs = sizes[0] * sizes[1] if link_type == "link_only" else sum(sizes) * (sum(sizes) - 1) / 2
    compared = {c.column for c in comparisons}
    # records and candidate pairs live apart from the log: in memory, or as temporary tables of a distributed
    # engine (where the blocking joins and the comparisons then run; EM works on the counted patterns)
    con = engine if engine is not None else scratch_engine()
    try:
        _records(con, tables, unique_id, columns)
        side = "l._source = 0 AND r._source = 1" if link_type == "link_only" else "l._id < r._id"

        def blocked(rule: str) -> str:
            return f"SELECT l._row AS a, r._row AS b FROM _records l JOIN _records r ON ({rule}) AND {side}"

        u = _u_levels(con, comparisons, link_type, sizes, u_pairs, seed)
        start_m = []
        for c in comparisons:
            start = np.full(c.levels, 0.1 / (c.levels - 1))
            start[-1] = 0.9
            start_m.append(start)
        estimates: list[list[np.ndarray]] = [[] for _ in comparisons]
        iterations = 0
        grouped = _compare(con, comparisons, [blocked(rule) for rule in blocking])
        for block in training:
            left_out = set(block.block) | set(block.ignore)
            if block_on(*block.block) in blocking and all(c in compared for c in block.block):
                table = _patterns_within(con, comparisons, block.block, left_out)
            else:
                table = _patterns(con, blocked(block_on(*block.block)), comparisons, left_out)
            if table.num_rows == 0:
                continue
            _, _, m, used = em(_matrix(table, len(comparisons)), table.column("n").to_numpy(), start_m, u, 0.5)
            iterations += used
            for k, c in enumerate(comparisons):
                if c.column not in left_out:
                    estimates[k].append(m[k])
        m = [np.mean(found, axis=0) if found else start for found, start in zip(estimates, start_m)]
        candidates = int(sum(grouped.column("n").to_pylist()))
        if candidates == 0:
            return LinkResult(_EMPTY, 0, 0, 0.0, m, u, iterations)
        posterior, prior, _, used = em(
            _matrix(grouped, len(comparisons)),
            grouped.column("n").to_numpy(),
            m,
            u,
            candidates / total_pairs,
            learn_m=False,
            total_pairs=total_pairs,
        )
        pairs = _answer(con, grouped, posterior, threshold, len(comparisons))
        return LinkResult(pairs, candidates, len(grouped), prior, m, u, iterations + used)
    finally:
        if engine is None:
            con.close()
        else:
            _drop_scratch(con, len(tables))


def _drop_scratch(con: Engine, sources: int) -> None:
    """The matcher's tables, off an engine that is not its own: the records handed in and the scores (both
    registered), and the tables it made."""
    for name in [f"_source_{i}" for i in range(sources)] + ["_scored"]:
        if con.has_table(name):
            con.unregister(name)
    for name in ("_records", "_compared", "_random_levels"):
        con.execute(f"DROP TABLE IF EXISTS {name}")


_EMPTY = pa.table(
    {
        "id_l": pa.array([], pa.string()),
        "id_r": pa.array([], pa.string()),
        "match_probability": pa.array([], pa.float64()),
    }
)


def _compare(con: Engine, comparisons: list[Comparison], candidates: list[str]) -> pa.Table:
    """Compute each candidate pair's levels once (table ``_compared``); return the count per pattern."""
    keys = ", ".join(f"c{k}" for k in range(len(comparisons)))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _compared AS
        SELECT p.a, p.b, {_levels(comparisons)}
        FROM (SELECT DISTINCT a, b FROM ({" UNION ALL ".join(candidates)})) p
        JOIN _records l ON l._row = p.a JOIN _records r ON r._row = p.b""")
    return con.query(f"SELECT {keys}, count(*) AS n FROM _compared GROUP BY ALL ORDER BY ALL")


def _answer(con: Engine, grouped: pa.Table, posterior: np.ndarray, threshold: float, k: int) -> pa.Table:
    """The compared pairs whose pattern's match probability is at least ``threshold``."""
    keys = ", ".join(f"c{i}" for i in range(k))
    con.register("_scored", grouped.drop(["n"]).append_column("match_probability", pa.array(posterior)))
    return con.query(f"""
        SELECT l._id AS id_l, r._id AS id_r, s.match_probability
        FROM _compared c JOIN _scored s USING ({keys})
        JOIN _records l ON l._row = c.a JOIN _records r ON r._row = c.b
        WHERE s.match_probability >= {float(threshold)}
        ORDER BY id_l, id_r""")


def score(
    table: pa.Table,
    unique_id: str,
    comparisons: list[Comparison],
    blocking: list[str],
    m: list[np.ndarray],
    u: list[np.ndarray],
    prior: float,
    threshold: float,
    involving: list[str],
) -> pa.Table:
    """Candidate pairs within ``table`` that involve a record of ``involving``, scored with parameters
    learnt before (``m``, ``u``, ``prior`` of a ``LinkResult``); those at or above ``threshold``.

    For records that arrive after the model was learnt: nothing is re-estimated, so the cost is
    that of their own candidates only.
    """
    columns = sorted({c.column for c in comparisons} | {n for n in table.column_names if n != unique_id})
    con = scratch_engine()  # records and candidate pairs live apart from the log, in memory
    try:
        _records(con, [table], unique_id, columns)
        con.register("_involving", pa.table({"_id": pa.array(list(involving), pa.string())}))
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _new AS SELECT * FROM _records WHERE _id IN (SELECT _id FROM _involving)"
        )
        # the new records on one side of each rule (rules are symmetric), every record on the other
        candidates = [
            f"""SELECT least(l._row, r._row) AS a, greatest(l._row, r._row) AS b
                          FROM _new l JOIN _records r ON ({rule}) AND l._row <> r._row"""
            for rule in blocking
        ]
        grouped = _compare(con, comparisons, candidates)
        if grouped.num_rows == 0:
            return _EMPTY
        posterior = _posterior(_matrix(grouped, len(comparisons)), m, u, prior)
        return _answer(con, grouped, posterior, threshold, len(comparisons))
    finally:
        con.close()
