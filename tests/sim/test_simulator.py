"""The simulated retailer: deterministic, with truth kept apart and the noise it promises."""

import hashlib
from datetime import datetime, timezone

import orjson
import pyarrow.parquet as pq
import pytest

from omnithread.errors import ConfigError
from omnithread.sim import WorldConfig, build_world, simulate

TINY = WorldConfig(people=150, days=10, holdout_days=4, products=80, seed=3)


def digest(folder) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_the_same_seed_writes_the_same_files_and_another_seed_does_not(tmp_path):
    simulate(TINY, tmp_path / "a")
    simulate(TINY, tmp_path / "b")
    simulate(TINY.with_(seed=4), tmp_path / "c")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["sources/events.jsonl"] != digest(tmp_path / "c")["sources/events.jsonl"]


def test_the_world_has_every_habit_household_and_identifier(small_world):
    out, manifest = small_world
    persons = pq.read_table(out / "truth" / "persons.parquet").to_pylist()
    assert {p["habit"] for p in persons} == {"online", "store", "both"}
    assert any(p["household"] == q["household"] for p, q in zip(persons, persons[1:]))
    kinds = {r["type"] for r in pq.read_table(out / "truth" / "identifiers.parquet").to_pylist()}
    assert {
        "account",
        "email",
        "phone",
        "device",
        "loyalty_card",
        "payment_token",
        "palm_token",
        "app_code",
        "signup",
        "till_order",
        "store_visit",
    } <= kinds


def test_shared_cards_and_devices_exist(small_world):
    out, _ = small_world
    ids = pq.read_table(out / "truth" / "identifiers.parquet").to_pylist()
    owners: dict[tuple, set] = {}
    for row in ids:
        owners.setdefault((row["type"], row["value"]), set()).add(row["person_id"])
    assert any(len(p) > 1 for (kind, _), p in owners.items() if kind == "payment_token")
    assert any(len(p) > 1 for (kind, _), p in owners.items() if kind == "device")


def test_holdout_purchases_are_in_the_truth_only(small_world):
    out, manifest = small_world
    future = pq.read_table(out / "truth" / "future_purchases.parquet").to_pylist()
    assert future and all(f["period"] == "holdout" for f in future)
    end = datetime(2026, 9, 1, tzinfo=timezone.utc).timestamp() + 20 * 86400
    assert all(f["at"].timestamp() >= end for f in future)
    sources = b"".join(open(p, "rb").read() for p in manifest["sources"])
    assert not any(f["order_id"].encode() in sources for f in future[:200])


def test_channels_have_their_own_category_mix(small_world):
    """Groceries dominate store baskets; online orders lean to electronics, books and the like."""
    from omnithread.sim.world import CATEGORY_NAMES
    from tests.conftest import SMALL_WORLD

    out, _ = small_world
    world = build_world(SMALL_WORLD)
    category = dict(zip(world.product_ids.tolist(), world.product_category.tolist()))
    grocery = {CATEGORY_NAMES.index(c) for c in ("produce", "dairy", "bakery", "frozen")}
    orders = pq.read_table(out / "truth" / "orders.parquet").to_pylist()

    def grocery_share(channels):
        lines = [o for o in orders if o["channel"] in channels]
        return sum(category[o["product_id"]] in grocery for o in lines) / len(lines)

    assert grocery_share({"store"}) > 2 * grocery_share({"web", "app"})


def test_a_person_buys_what_they_like_on_every_channel(small_world):
    """Tastes are one person's on every channel: people who shop both ways overlap with themselves."""
    out, _ = small_world
    orders = pq.read_table(out / "truth" / "orders.parquet").to_pylist()
    bought: dict[tuple, set] = {}
    for o in orders:
        bought.setdefault((o["person_id"], o["channel"] == "store"), set()).add(o["product_id"])
    people = [p for (p, store) in bought if store and (p, False) in bought]
    same = sum(len(bought[(p, True)] & bought[(p, False)]) for p in people)
    shuffled = sum(len(bought[(p, True)] & bought[(q, False)]) for p, q in zip(people, people[1:] + people[:1]))
    assert people and same > shuffled


def test_skewed_device_clocks_are_corrected_on_import(small_world, workspace):
    """Orders' corrected event times match the true order times to within a second."""
    out, manifest = small_world
    workspace.ingestor().ingest_paths([manifest["sources"][0]])
    truth = {o["order_id"]: o["at"] for o in pq.read_table(out / "truth" / "orders.parquet").to_pylist()}
    rows = workspace.engine.rows(
        "SELECT properties->>'order_id' AS order_id, event_at, original_at FROM events "
        "WHERE event = 'Order Completed' AND channel IN ('web', 'app')"
    )
    assert len(rows) > 50
    gaps = [abs((r["event_at"] - truth[r["order_id"]]).total_seconds()) for r in rows]
    skewed = [abs((r["original_at"] - truth[r["order_id"]]).total_seconds()) for r in rows]
    assert max(gaps) < 1.0
    assert max(skewed) > 60  # some devices really were wrong


def test_malformed_lines_are_listed_in_the_truth(small_world):
    out, manifest = small_world
    malformed = [orjson.loads(x) for x in (out / "truth" / "malformed.jsonl").read_bytes().splitlines()]
    assert {m["kind"] for m in malformed} >= {"truncated_json", "missing_identity", "till_price"}


@pytest.mark.parametrize("field, value", [("people", 0), ("typo_rate", 1.5), ("online_only", 0.8)])
def test_a_bad_config_names_the_setting(field, value):
    with pytest.raises(ConfigError, match=field):
        WorldConfig(**{field: value})


def test_build_world_is_vectorised_and_deterministic():
    a, b = build_world(TINY), build_world(TINY)
    assert (a.emails == b.emails).all() and (a.taste == b.taste).all()


@pytest.mark.slow
def test_one_hundred_thousand_people_over_ninety_days(tmp_path):
    manifest = simulate(WorldConfig(people=100_000, days=90, products=2_000), tmp_path)
    assert manifest["lines"]["events.jsonl"] > 1_000_000


def test_membership_is_visible_as_a_plan_trait(small_world, workspace):
    out, manifest = small_world
    workspace.ingestor().ingest_paths([manifest["sources"][0]])
    persons = {p["person_id"]: p["member"] for p in pq.read_table(out / "truth" / "persons.parquet").to_pylist()}
    accounts = {
        r["value"]: persons[r["person_id"]]
        for r in pq.read_table(out / "truth" / "identifiers.parquet").to_pylist()
        if r["type"] == "account"
    }
    rows = workspace.engine.rows(
        "SELECT user_id, traits->>'plan' AS plan FROM events WHERE call = 'identify' AND traits->>'plan' IS NOT NULL"
    )
    assert rows and all((r["plan"] == "member") == accounts[r["user_id"]] for r in rows)
    assert {r["plan"] for r in rows} == {"member", "standard"}
