"""Probabilistic matching of records that share no strong key, with Splink.

Loyalty sign-ups at a store desk carry a name, an address, a date of birth and
sometimes a phone, typed by hand with typos; online accounts carry the same from
the account profile. A Fellegi-Sunter model whose parameters are learnt from the
data (u by random sampling, m by expectation maximisation) scores candidate pairs
found by blocking rules chosen to keep recall high; pairs above the threshold
become links of the identity graph, with their score.

The names and addresses used live in their own table, ``person_attributes``,
which erasure can wipe; phones and emails there are keyed hashes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

from omnithread.engine.base import Engine

__all__ = ["attributes_sql", "build_attributes", "match_records", "match_tables", "MatchModel", "signup_model",
           "one_to_one", "cluster_pairs",
           "MatchingSkipped", "MIN_RECORDS"]

# Below this many records the model's parameters cannot be learnt reliably from the data.
MIN_RECORDS = 500


class MatchingSkipped(Exception):
    """Probabilistic matching could not run on these records; the reason says why."""


def attributes_sql() -> str:
    """The latest name, address, birth date and phone each account or store sign-up gave."""
    return """
        SELECT record_id, origin,
               arg_max(lower(trim(traits->>'firstName')), event_at) AS first_name,
               arg_max(lower(trim(traits->>'lastName')), event_at) AS surname,
               arg_max(lower(trim(traits->'address'->>'street')), event_at) AS street,
               arg_max(lower(trim(traits->'address'->>'city')), event_at) AS city,
               arg_max(upper(replace(traits->'address'->>'postalCode', ' ', '')), event_at) AS postcode,
               arg_max(traits->>'birthday', event_at) AS dob,
               arg_max(traits->>'phone', event_at) FILTER (WHERE traits->>'phone' IS NOT NULL) AS phone
        FROM (
            SELECT *, CASE WHEN user_id IS NOT NULL THEN 'account:' || user_id
                           ELSE 'store_session:' || anonymous_id END AS record_id,
                      CASE WHEN user_id IS NOT NULL THEN 'online' ELSE 'store' END AS origin
            FROM events
            WHERE call = 'identify' AND traits->>'lastName' IS NOT NULL
              AND (user_id IS NOT NULL OR channel = 'store')
        )
        GROUP BY record_id, origin"""


def build_attributes(engine: Engine) -> int:
    engine.execute(f"CREATE OR REPLACE TABLE person_attributes AS {attributes_sql()}")
    return engine.scalar("SELECT count(*) FROM person_attributes")


@dataclass(frozen=True)
class MatchModel:
    """What a probabilistic match compares and how it finds candidates.

    ``comparisons`` are Splink comparison objects; ``blocking`` the rules that generate
    candidate pairs; ``deterministic`` the rules (and their assumed ``recall``) used to
    estimate the prior; ``em_blocks`` the blocks expectation maximisation learns m on.
    """

    unique_id: str
    link_type: str
    comparisons: Callable[[], list]
    blocking: Callable[[], list]
    deterministic: Callable[[], list]
    recall: float
    em_blocks: Callable[[], list]
    u_pairs: float = 5e6


def signup_model() -> MatchModel:
    """Store sign-ups and online accounts: names, birth date, street, postcode, phone."""
    import splink.comparison_library as cl
    from splink import block_on

    return MatchModel(
        unique_id="record_id", link_type="dedupe_only",
        comparisons=lambda: [
            cl.NameComparison("first_name"), cl.NameComparison("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=True), cl.LevenshteinAtThresholds("street", [1, 3]),
            cl.ExactMatch("postcode"), cl.ExactMatch("phone"),
        ],
        blocking=lambda: [block_on("dob"), block_on("postcode"), block_on("phone"), block_on("surname", "city")],
        deterministic=lambda: [block_on("dob", "surname"), block_on("phone")], recall=0.7,
        em_blocks=lambda: [block_on("dob"), block_on("postcode")],
    )


def match_tables(tables: list[pa.Table], model: MatchModel, threshold: float, seed: int = 7) -> list[dict]:
    """Pairs across (or within) ``tables`` whose match probability is at least ``threshold``."""
    from splink import DuckDBAPI, Linker, SettingsCreator

    db = DuckDBAPI()
    data = [db.register(table, dataset_display_name=f"records_{i}") for i, table in enumerate(tables)]
    settings = SettingsCreator(
        link_type=model.link_type, unique_id_column_name=model.unique_id, comparisons=model.comparisons(),
        blocking_rules_to_generate_predictions=model.blocking(), retain_intermediate_calculation_columns=False,
    )
    linker = Linker(data if len(data) > 1 else data[0], settings, log_level=logging.WARNING)
    try:
        linker.training.estimate_probability_two_random_records_match(model.deterministic(), recall=model.recall)
        linker.training.estimate_u_using_random_sampling(max_pairs=model.u_pairs, seed=seed)
        for block in model.em_blocks():
            linker.training.estimate_parameters_using_expectation_maximisation(block)
    except (ValueError, ZeroDivisionError, ArithmeticError) as error:
        raise MatchingSkipped(f"the model could not be learnt from these records ({error})") from error
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    left, right = f"{model.unique_id}_l", f"{model.unique_id}_r"
    return [{"id_l": row[left], "id_r": row[right], "match_probability": row["match_probability"]}
            for row in predictions.as_record_list()]


def one_to_one(pairs: list[dict]) -> list[dict]:
    """Keep each record's best match only: for two sources that are each free of duplicates."""
    taken, kept = set(), []
    for pair in sorted(pairs, key=lambda p: (-p["match_probability"], p["id_l"], p["id_r"])):
        if pair["id_l"] not in taken and pair["id_r"] not in taken:
            taken.update((pair["id_l"], pair["id_r"]))
            kept.append(pair)
    return kept


def cluster_pairs(pairs: list[dict]) -> set[tuple[str, str]]:
    """Every pair within the clusters the matched pairs form (matches are transitive, as persons are)."""
    from itertools import combinations

    from omnithread.identity.cluster import UnionFind

    found = UnionFind()
    for pair in pairs:
        found.add(pair["id_l"])
        found.add(pair["id_r"])
        found.union(pair["id_l"], pair["id_r"])
    members: dict[str, list] = {}
    for node in found.parent:
        members.setdefault(found.find(node), []).append(node)
    return {tuple(sorted(p)) for group in members.values() for p in combinations(group, 2)}


def match_records(records: pa.Table, threshold: float = 0.999, seed: int = 7) -> list[dict]:
    """Pairs of sign-up and account records that are probably one person (id_l, id_r, match_probability)."""
    if records.num_rows < MIN_RECORDS:
        raise MatchingSkipped(f"{records.num_rows} records, fewer than the {MIN_RECORDS} needed to learn the model")
    return match_tables([records], signup_model(), threshold, seed)
