"""String similarities DuckDB has and Spark SQL lacks, as vectorised Python UDFs for the Spark engine.

The probabilistic matcher compares names with ``jaro_winkler_similarity`` and ``damerau_levenshtein``
(DuckDB's functions; Splink ships a JAR for them on Spark, which cannot be fetched here). Both come from
rapidfuzz, whose algorithms DuckDB's are ported from, and give DuckDB's answers (tested on random strings,
the one difference handled: two empty strings are 0.0 apart in DuckDB's Jaro-Winkler). This module imports
nothing of omnithread, so the UDFs are shipped to executors by value: executors need Python with pandas,
pyarrow and rapidfuzz, not omnithread.
"""

from __future__ import annotations

import pandas as pd


def _missing(value) -> bool:
    return not isinstance(value, str)  # SQL NULL arrives as None or NaN


def jaro_winkler(a: pd.Series, b: pd.Series) -> pd.Series:
    from rapidfuzz.distance import JaroWinkler

    out = [
        None if _missing(x) or _missing(y) else (0.0 if not x and not y else JaroWinkler.similarity(x, y))
        for x, y in zip(a.tolist(), b.tolist())
    ]
    return pd.Series(out, dtype="float64")


def damerau_levenshtein(a: pd.Series, b: pd.Series) -> pd.Series:
    from rapidfuzz.distance import DamerauLevenshtein

    out = [
        None if _missing(x) or _missing(y) else DamerauLevenshtein.distance(x, y)
        for x, y in zip(a.tolist(), b.tolist())
    ]
    return pd.Series(out, dtype="Int64")
