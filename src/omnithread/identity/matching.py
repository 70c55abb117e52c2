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

import pyarrow as pa

from omnithread.engine.base import Engine

__all__ = ["attributes_sql", "build_attributes", "match_records", "MatchingSkipped", "MIN_RECORDS"]

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


def match_records(records: pa.Table, threshold: float = 0.95, seed: int = 7) -> list[dict]:
    """Pairs of records that are probably one person: (record_id_l, record_id_r, match_probability)."""
    if records.num_rows < MIN_RECORDS:
        raise MatchingSkipped(f"{records.num_rows} records, fewer than the {MIN_RECORDS} needed to learn the model")
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    db = DuckDBAPI()
    data = db.register(records, dataset_display_name="records")
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="record_id",
        comparisons=[
            cl.NameComparison("first_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.LevenshteinAtThresholds("street", [1, 3]),
            cl.ExactMatch("postcode"),
            cl.ExactMatch("phone"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("dob"), block_on("postcode"), block_on("phone"), block_on("surname", "city"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(data, settings, log_level=logging.WARNING)
    try:
        linker.training.estimate_probability_two_random_records_match(
            [block_on("dob", "surname"), block_on("phone")], recall=0.7)
        linker.training.estimate_u_using_random_sampling(max_pairs=5e6, seed=seed)
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"))
    except (ValueError, ZeroDivisionError, ArithmeticError) as error:
        raise MatchingSkipped(f"the model could not be learnt from these records ({error})") from error
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    keep = ("record_id_l", "record_id_r", "match_probability")
    return [{k: row[k] for k in keep} for row in predictions.as_record_list()]
