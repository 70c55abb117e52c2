"""Probabilistic matching of records that share no strong key.

Loyalty sign-ups at a store desk carry a name, an address, a date of birth and
sometimes a phone, typed by hand with typos; online accounts carry the same from
the account profile. A Fellegi-Sunter model whose parameters are learnt from the
data by expectation maximisation (``omnithread.identity.linkage``) scores candidate
pairs found by blocking rules chosen to keep recall high; pairs above the
threshold become links of the identity graph, with their score.

The names and addresses used live in their own table, ``person_attributes``,
which erasure can wipe; phones and emails there are keyed hashes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from omnithread.engine.base import Engine
from omnithread.errors import OmnithreadError
from omnithread.identity.cluster import UnionFind
from omnithread.identity.linkage import Comparison, LinkResult, Training, block_on, link, score

__all__ = [
    "attributes_sql",
    "record_ids_sql",
    "build_attributes",
    "match_records",
    "learn",
    "learn_records",
    "save_model",
    "match_new_records",
    "match_tables",
    "MatchModel",
    "signup_model",
    "one_to_one",
    "cluster_pairs",
    "MatchingSkipped",
    "MIN_RECORDS",
]

# Below this many records the model's parameters cannot be learnt reliably from the data.
MIN_RECORDS = 500


class MatchingSkipped(OmnithreadError):
    """Probabilistic matching could not run on these records; the reason says why."""


# attribute -> (JSON path in the traits, how its text is normalised; {} is the text)
_ATTRIBUTES = {
    "first_name": ("$.firstName", "lower(trim({}))"),
    "surname": ("$.lastName", "lower(trim({}))"),
    "street": ("$.address.street", "lower(trim({}))"),
    "city": ("$.address.city", "lower(trim({}))"),
    "postcode": ("$.address.postalCode", "upper(replace({}, ' ', ''))"),
    "dob": ("$.birthday", "trim({})"),
    "phone": ("$.phone", "{}"),
}


_RECORD_ID = "CASE WHEN user_id IS NOT NULL THEN 'account:' || user_id ELSE 'store_session:' || anonymous_id END"
# the events that give a record's attributes: identify calls with a surname, online or at a store desk
_GIVES_ATTRIBUTES = (
    "call = 'identify' AND traits->>'lastName' IS NOT NULL AND (user_id IS NOT NULL OR channel = 'store')"
)


def record_ids_sql(source: str) -> str:
    """The records (``record_id``) whose attributes the events of ``source`` give or change."""
    return f"SELECT DISTINCT {_RECORD_ID} AS record_id FROM {source} WHERE {_GIVES_ATTRIBUTES}"


def attributes_sql(only: str | None = None) -> str:
    """The latest name, address, birth date and phone each account or store sign-up gave.

    A blank value counts as missing, so the latest value given is kept. ``only`` names a
    relation of ``record_id`` values to limit the answer to.
    """
    limit = f" AND {_RECORD_ID} IN (SELECT record_id FROM {only})" if only else ""
    paths = "[" + ", ".join(f"'{path}'" for path, _ in _ATTRIBUTES.values()) + "]"
    values = ",\n".join(
        f"nullif({form.format(f'_v[{i}]')}, '') AS {name}"
        for i, (name, (_, form)) in enumerate(_ATTRIBUTES.items(), start=1)
    )
    columns = ",\n".join(
        f"arg_max({name}, event_at) FILTER (WHERE {name} IS NOT NULL) AS {name}" for name in _ATTRIBUTES
    )
    # the traits are parsed once per event, for every attribute together
    return f"""
        SELECT record_id, origin, {columns}
        FROM (
            SELECT record_id, origin, event_at, {values}
            FROM (
                SELECT {_RECORD_ID} AS record_id, event_at, json_extract_string(traits, {paths}) AS _v,
                       CASE WHEN user_id IS NOT NULL THEN 'online' ELSE 'store' END AS origin
                FROM events
                WHERE {_GIVES_ATTRIBUTES}{limit}
            )
        )
        GROUP BY record_id, origin"""


def build_attributes(engine: Engine) -> int:
    engine.execute(f"CREATE OR REPLACE TABLE person_attributes AS {attributes_sql()}")
    return engine.scalar("SELECT count(*) FROM person_attributes")


@dataclass(frozen=True)
class MatchModel:
    """What a probabilistic match compares and how it finds candidates.

    ``comparisons`` say how each column is compared; ``blocking`` are the rules (SQL
    conditions between records ``l`` and ``r``, see ``linkage.block_on``) whose union
    gives the candidate pairs; ``training`` the blocks m is learnt on; ``u_pairs`` random
    pairs give the non-match levels.
    """

    unique_id: str
    link_type: str
    comparisons: list[Comparison]
    blocking: list[str]
    training: list[Training]
    u_pairs: int = 100_000


def signup_model() -> MatchModel:
    """Store sign-ups and online accounts: names, birth date, street, postcode, phone.

    The blocking keeps every block small however many records there are: birth date
    only with a name, postcode, phone. Street with surname was a fifth rule; at a
    million people it brought 4.2 of the 6.2 million candidate pairs and not one match
    the other four missed (nor on the simulator's harder noise), so it went.
    """
    return MatchModel(
        unique_id="record_id",
        link_type="dedupe_only",
        comparisons=[
            Comparison("first_name", "name"),
            Comparison("surname", "name"),
            Comparison("dob", "edits", (1, 2)),
            Comparison("street", "edits", (1, 3)),
            Comparison("postcode", "edits", (1,)),
            Comparison("phone"),
        ],
        blocking=[block_on("dob", "surname"), block_on("dob", "first_name"), block_on("postcode"), block_on("phone")],
        # within a postcode the street agrees for a whole household, so it is left out there
        training=[Training(("dob", "first_name")), Training(("postcode",), ignore=("street",))],
    )


def match_tables(tables: list[pa.Table], model: MatchModel, threshold: float, seed: int = 7) -> list[dict]:
    """Pairs across (or within) ``tables`` whose match probability is at least ``threshold``."""
    return learn(tables, model, threshold, seed).pairs.to_pylist()


def learn(
    tables: list[pa.Table], model: MatchModel, threshold: float, seed: int = 7, engine: Engine | None = None
) -> LinkResult:
    """Learn ``model``'s parameters from ``tables`` and match them: the pairs and what was learnt (on
    ``engine`` when given, a distributed one; else in an in-memory engine of its own)."""
    result = link(
        tables,
        model.unique_id,
        model.comparisons,
        model.blocking,
        model.training,
        threshold,
        link_type=model.link_type,
        u_pairs=model.u_pairs,
        seed=seed,
        engine=engine,
    )
    if result.candidates and not 0 < result.prior < 1:
        raise MatchingSkipped(f"the model could not be learnt from these records (prior {result.prior})")
    return result


def one_to_one(pairs: list[dict]) -> list[dict]:
    """Keep each record's best match only: for two sources that are each free of duplicates."""
    taken: set = set()
    kept: list = []
    for pair in sorted(pairs, key=lambda p: (-p["match_probability"], p["id_l"], p["id_r"])):
        if pair["id_l"] not in taken and pair["id_r"] not in taken:
            taken.update((pair["id_l"], pair["id_r"]))
            kept.append(pair)
    return kept


def cluster_pairs(pairs: list[dict]) -> set[tuple[str, str]]:
    """Every pair within the clusters the matched pairs form (matches are transitive, as persons are)."""
    from itertools import combinations

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
    return learn_records(records, threshold, seed).pairs.to_pylist()


def learn_records(
    records: pa.Table, threshold: float = 0.999, seed: int = 7, engine: Engine | None = None
) -> LinkResult:
    """Learn the sign-up model from ``records`` and match them: the pairs and the parameters learnt."""
    if records.num_rows < MIN_RECORDS:
        raise MatchingSkipped(f"{records.num_rows} records, fewer than the {MIN_RECORDS} needed to learn the model")
    return learn([records], signup_model(), threshold, seed, engine)


def save_model(engine: Engine, result: LinkResult) -> None:
    """Keep what the last full resolve learnt, so records that arrive later are scored alike."""
    engine.execute("CREATE OR REPLACE TABLE identity_match_model (learnt_at TIMESTAMPTZ, model VARCHAR)")
    engine.execute(
        "INSERT INTO identity_match_model VALUES (now(), ?)",
        [json.dumps({"m": [x.tolist() for x in result.m], "u": [x.tolist() for x in result.u], "prior": result.prior})],
    )


def match_new_records(engine: Engine, record_ids: str, threshold: float) -> list[dict]:
    """Refresh the attributes of the records in relation ``record_ids`` and score them, with the model the
    last full resolve learnt, against their blocking candidates among all records.

    Returns the pairs at or above ``threshold`` (id_l, id_r, match_probability); none when
    no model has been learnt yet.
    """
    if not engine.has_table("identity_match_model") or not engine.has_table("person_attributes"):
        return []
    engine.execute(f"DELETE FROM person_attributes WHERE record_id IN (SELECT record_id FROM {record_ids})")
    engine.execute(f"INSERT INTO person_attributes {attributes_sql(only=record_ids)}")
    saved = json.loads(engine.scalar("SELECT model FROM identity_match_model"))
    model = signup_model()
    partners = " UNION ".join(
        f"SELECT r.* FROM person_attributes l JOIN person_attributes r ON {rule} "
        f"WHERE l.record_id IN (SELECT record_id FROM {record_ids})"
        for rule in model.blocking
    )
    records = engine.query(
        f"SELECT * FROM ({partners}) UNION SELECT * FROM person_attributes "
        f"WHERE record_id IN (SELECT record_id FROM {record_ids}) ORDER BY record_id"
    )
    new = [r["record_id"] for r in engine.rows(f"SELECT record_id FROM {record_ids}")]
    pairs = score(
        records,
        model.unique_id,
        model.comparisons,
        model.blocking,
        [np.array(x) for x in saved["m"]],
        [np.array(x) for x in saved["u"]],
        saved["prior"],
        threshold,
        new,
    )
    return pairs.to_pylist()
