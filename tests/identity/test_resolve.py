"""Identity resolution on hand-made logs whose right answer is known exactly, and on the simulator."""

import random
import zlib
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from omnithread.errors import ConfigError, NotFoundError
from omnithread.identity import IdentityConfig, describe_person, evaluate_against_truth, find_person, resolve_identities
from omnithread.identity.cluster import split_over_limit
from omnithread.workspace import Workspace
from tests.conftest import identify, till_order, web_order, write_lines

T = "2026-09-01T10:00:00Z"


def resolved(tmp_path, settings, events, config=None):
    path = write_lines(tmp_path / "events.jsonl", events)
    ws = Workspace(settings)
    ws.ingestor().ingest_paths([path])
    report = resolve_identities(ws.engine, ws.pseudonymiser, config)
    return ws, report


def person_of(ws, key):
    return find_person(ws.engine, key, ws.pseudonymiser)


def test_a_card_used_online_and_at_a_till_joins_the_store_visit_to_the_account(tmp_path, settings):
    ws, report = resolved(
        tmp_path,
        settings,
        [
            identify(1, "alice", "d1", email="Alice@Example.com"),
            web_order(2, "alice", "d1", "tok_alice_card"),
            till_order(3, "till:S1:T3", card="LC11112222", token="tok_alice_card"),
            till_order(4, "till:S1:T4", card="LC11112222"),
            identify(5, "bob", "d2", email="bob@example.com"),
        ],
    )
    with ws:
        alice = person_of(ws, "alice")
        assert person_of(ws, "alice@example.com") == person_of(ws, "till:S1:T3") == person_of(ws, "till:S1:T4") == alice
        assert person_of(ws, "bob") != alice
        assert report.persons == 2 and report.links_dropped == {}
        described = describe_person(ws.engine, alice)
        assert {i["identifier_type"] for i in described["identifiers"]} == {
            "account",
            "device",
            "email",
            "payment_token",
            "loyalty_card",
            "store_session",
        }
        assert {a["channel"] for a in described["activity"]} == {"web", "store"}
        link = next(
            found
            for found in described["links"]
            if found["b"].startswith("store_session:till:S1:T3") or found["a"].startswith("store_session:till:S1:T3")
        )
        assert link["first_message_id"] == "t3" and link["rules"] == ["Order Completed"]


def test_a_link_keeps_the_names_of_the_events_that_made_it_sorted_and_at_most_eight(tmp_path, settings):
    names = [f"Custom {letter}" for letter in "KJIHGFEDCBA"]  # eleven, sent in reverse order
    events = [
        {
            "type": "track",
            "event": name,
            "messageId": f"c{i}",
            "userId": "alice",
            "anonymousId": "d1",
            "timestamp": f"2026-09-01T10:{i:02d}:00Z",
            "context": {"channel": "web"},
        }
        for i, name in enumerate(names)
    ]
    events.append(web_order(20, None, "d1", "tok_alice"))
    events.append(web_order(21, None, "d1", "tok_alice"))
    events.append(identify(22, None, "d1", email="alice@example.com"))
    ws, _ = resolved(tmp_path, settings, events)
    with ws:
        links = {
            (row["a"].split(":")[0], row["b"].split(":")[0]): row
            for row in ws.engine.rows("SELECT a, b, rules, events, first_message_id FROM identity_edges")
        }
        account = links[("account", "device")]
        assert account["rules"] == sorted(names)[:8] and account["events"] == 11 and account["first_message_id"] == "c0"
        token = links[("device", "payment_token")]
        assert token["rules"] == ["Order Completed"] and token["events"] == 2 and token["first_message_id"] == "o20"
        assert links[("device", "email")]["rules"] == ["identify"]


def test_a_pair_linked_by_its_account_and_by_a_hash_on_its_device_is_one_link_with_both_rules(tmp_path, settings):
    # a sender whose user ids are email hashes: the account is an email node, which the device's
    # own identify names too, so the same pair comes from both halves of the graph's reading
    hashed = "em_" + "a" * 32
    ws, _ = resolved(
        tmp_path,
        settings,
        [
            web_order(1, hashed, "d1", "tok_a"),
            {**identify(2, None, "d1", email=hashed), "timestamp": "2026-09-01T11:00:00Z"},
            {**identify(3, None, "d1", email=hashed), "timestamp": "2026-09-01T12:00:00Z"},
        ],
    )
    with ws:
        links = ws.engine.rows(
            "SELECT a, b, events, rules, first_message_id FROM identity_edges "
            f"WHERE a = 'device:d1' AND b = 'email:{hashed}'"
        )
        assert links == [
            {
                "a": "device:d1",
                "b": f"email:{hashed}",
                "events": 3,
                "rules": ["Order Completed", "identify"],
                "first_message_id": "o1",
            }
        ]


def test_a_rebuild_keeps_person_ids_and_redirects_the_id_a_merge_retired(tmp_path, settings):
    first = [
        identify(1, None, "d1", email="ann@example.com"),
        identify(2, None, "d1", email="ann@example.com"),
        identify(3, None, "d2", phone="+442079460000"),
        identify(4, None, "d3", email="cy@example.com"),
    ]
    ws, report = resolved(tmp_path, settings, first)
    with ws:
        assert report.persons == 3
        before = {key: person_of(ws, key) for key in ("d1", "d2", "d3")}
        # d2 gives ann's email too: the person with more identifiers keeps its id, the other's redirects
        ws.ingestor().ingest_paths(
            [write_lines(tmp_path / "more.jsonl", [identify(5, None, "d2", email="ann@example.com")])]
        )
        report = resolve_identities(ws.engine, ws.pseudonymiser)
        assert report.persons == 2
        assert person_of(ws, "d1") == person_of(ws, "d2") == before["d1"] and person_of(ws, "d3") == before["d3"]
        assert ws.engine.rows("SELECT old_person_id, person_id, reason FROM person_redirects") == [
            {"old_person_id": before["d2"], "person_id": before["d1"], "reason": "merged on rebuild"}
        ]


FAMILY_CARD = [
    web_order(1, "alice", "d1", "tok_family"),
    web_order(2, "alice", "d1", "tok_family"),
    web_order(3, "bob", "d2", "tok_family"),
]


def test_a_family_card_does_not_merge_two_accounts(tmp_path, settings):
    # by default a card two accounts pay with is blocked: it joins nobody
    ws, report = resolved(tmp_path, settings, FAMILY_CARD)
    with ws:
        assert person_of(ws, "alice") != person_of(ws, "bob")
        reason = "identifier blocked: linked to 2 accounts, more than 1 allowed for a payment_token"
        assert report.links_dropped == {reason: 2}
    # allowed to join up to four accounts, the card is split off by the one-account limit instead, and
    # the stronger evidence (two orders) keeps it with alice
    lenient = IdentityConfig(max_accounts={**IdentityConfig().max_accounts, "payment_token": 4})
    (tmp_path / "lenient").mkdir()
    ws, report = resolved(
        tmp_path / "lenient", settings.with_(data_dir=tmp_path / "lenient" / "data"), FAMILY_CARD, lenient
    )
    with ws:
        assert person_of(ws, "alice") != person_of(ws, "bob")
        assert report.links_dropped == {"limit: at most 1 account per person": 1}
        card = ws.engine.scalar("SELECT person_id FROM identity_map WHERE identifier_type = 'payment_token'")
        assert card == person_of(ws, "alice")


@pytest.mark.parametrize("value", ["anonymous", "null", "0000000", "-1", "undefined"])
def test_blocked_values_link_nobody(tmp_path, settings, value):
    ws, report = resolved(tmp_path, settings, [identify(1, "alice", value), identify(2, "bob", value)])
    with ws:
        assert person_of(ws, "alice") != person_of(ws, "bob")
        assert report.blocked_identifiers == 1
        assert set(report.links_dropped) == {"identifier blocked: blocked value"}


def test_test_email_addresses_are_blocked_by_their_hash(tmp_path, settings):
    ws, report = resolved(
        tmp_path,
        settings,
        [identify(1, "alice", "d1", email="Test@Example.com"), identify(2, "bob", "d2", email="test@example.com")],
    )
    with ws:
        assert person_of(ws, "alice") != person_of(ws, "bob") and report.blocked_identifiers == 1


def test_a_demo_tablet_used_by_many_accounts_is_blocked_automatically(tmp_path, settings):
    events = [identify(n, f"user{n}", "store-demo-tablet") for n in range(10)]
    ws, report = resolved(tmp_path, settings, events)
    with ws:
        assert report.persons == 10 and report.blocked_identifiers == 1
        reason = ws.engine.scalar("SELECT blocked_reason FROM identity_map WHERE identifier_type = 'device'")
        assert reason == "linked to 10 accounts, more than 6 allowed for a device"
        with pytest.raises(NotFoundError, match="blocked"):
            person_of(ws, "store-demo-tablet")


def test_limits_are_configurable(tmp_path, settings):
    config = IdentityConfig(limits={**IdentityConfig().limits, "email": 1})
    ws, report = resolved(
        tmp_path,
        settings,
        [identify(1, "alice", "d1", email="a@example.com"), identify(2, "alice", "d1", email="a2@example.com")],
        config,
    )
    with ws:
        assert report.links_dropped == {"limit: at most 1 email per person": 1}
    with pytest.raises(ConfigError, match="limits.email"):
        IdentityConfig(limits={"email": 0})


def test_clustering_does_not_depend_on_input_order(tmp_path, settings, small_world, monkeypatch):
    monkeypatch.setenv("OMNITHREAD_SECRET", "one-secret-for-both-runs-0123")
    out, manifest = small_world
    lines = open(manifest["sources"][0], "rb").read().splitlines()
    random.Random(5).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_bytes(b"\n".join(lines) + b"\n")
    maps = []
    for name, source in (("a", manifest["sources"][0]), ("b", shuffled)):
        with Workspace(settings.with_(data_dir=tmp_path / name)) as ws:
            ws.ingestor().ingest_paths([source])
            resolve_identities(ws.engine, ws.pseudonymiser)
            maps.append(ws.engine.rows("SELECT identifier, person_id FROM identity_map ORDER BY 1"))
    assert maps[0] == maps[1]


def test_split_over_limit_keeps_the_strongest_links():
    edges = [
        {"a": "account:a", "b": "payment_token:pt_x", "events": 1, "first_seen_at": 1},
        {"a": "account:b", "b": "payment_token:pt_x", "events": 3, "first_seen_at": 2},
        {"a": "account:a", "b": "email:em_a", "events": 1, "first_seen_at": 3},
    ]
    labels, refused = split_over_limit(edges, IdentityConfig())
    assert labels["payment_token:pt_x"] == labels["account:b"] != labels["account:a"] == labels["email:em_a"]
    assert refused == [("account:a", "payment_token:pt_x", "limit: at most 1 account per person")]
    assert split_over_limit(list(reversed(edges)), IdentityConfig()) == (labels, refused)


def test_evaluation_counts_pairs_and_clusters_exactly(tmp_path, settings):
    # alice: account + device; bob: account + device, but bob's device is wrongly joined to alice
    ws, _ = resolved(
        tmp_path, settings, [identify(1, "alice", "d1"), identify(2, "bob", "d2"), identify(3, "alice", "d2")]
    )
    truth = tmp_path / "truth"
    truth.mkdir()
    pq.write_table(
        pa.table(
            {
                "person_id": ["A", "A", "B", "B"],
                "type": ["account", "device", "account", "device"],
                "value": ["alice", "d1", "bob", "d2"],
            }
        ),
        truth / "identifiers.parquet",
    )
    with ws:
        result = evaluate_against_truth(ws.engine, ws.pseudonymiser, truth)
    # resolved: {alice, d1, d2} and {bob}; true pairs: (alice,d1), (bob,d2); predicted pairs: 3, correct 1
    assert result["pairwise"] == {"precision": round(1 / 3, 4), "recall": 0.5, "f1": 0.4}
    assert result["over_merge_rate"] == 0.5 and result["under_merge_rate"] == 0.5
    assert result["cluster"]["precision"] == 0.0


def test_the_simulated_retailer_resolves_with_few_over_merges(small_world, workspace):
    out, manifest = small_world
    workspace.ingestor().ingest_paths(manifest["sources"])
    report = resolve_identities(workspace.engine, workspace.pseudonymiser)
    result = evaluate_against_truth(workspace.engine, workspace.pseudonymiser, out / "truth")
    assert report.persons_with_account == workspace.engine.scalar(
        "SELECT count(*) FROM identity_map WHERE identifier_type = 'account'"
    )
    assert result["pairwise"]["precision"] > 0.85 and result["over_merge_rate"] < 0.08
    # where the time went, phase by phase, adds up to the whole
    assert list(report.phases) == ["links", "matching", "components", "split", "persons"]
    assert 0 < sum(report.phases.values()) <= report.seconds


def test_a_person_with_hundreds_of_devices_keeps_the_first_twenty(tmp_path, settings):
    events = [identify(n, "alice", f"device-{n:03d}") for n in range(300)]
    ws, report = resolved(tmp_path, settings, events)
    with ws:
        alice = person_of(ws, "alice")
        assert ws.engine.scalar("SELECT device FROM persons WHERE person_id = ?", [alice]) == 20
        assert report.links_dropped == {"limit: at most 20 device per person": 280}
        assert report.persons == 281  # the other devices stay persons of their own, nothing is lost


def test_an_identify_that_would_join_two_accounts_is_refused(tmp_path, settings):
    ws, report = resolved(
        tmp_path, settings, [identify(1, "alice", "d1"), identify(2, "alice", "d1"), identify(3, "bob", "d1")]
    )
    with ws:
        assert person_of(ws, "alice") == person_of(ws, "d1") != person_of(ws, "bob")
        assert report.links_dropped == {"limit: at most 1 account per person": 1}


def test_events_with_bad_or_missing_identifiers_are_kept_apart(tmp_path, settings):
    ws, report = resolved(
        tmp_path,
        settings,
        [
            identify(1, "alice", "d1", email="not-an-email", phone="12"),  # rejected at import, with reasons
            identify(2, "bob", "d2", firstName="Bob"),
            {"type": "page", "anonymousId": "d3", "messageId": "p3", "timestamp": T},
        ],
    )
    with ws:
        assert ws.log.rejected()[0]["reason_codes"] == ["invalid_identifier"]
        assert report.persons == 2 and person_of(ws, "d3") != person_of(ws, "bob")


def test_no_giant_cluster_at_the_hard_noise_setting(tmp_path, settings):
    from omnithread.sim import WorldConfig, simulate

    manifest = simulate(WorldConfig.hard(people=400, days=20, products=200, seed=5), tmp_path / "world")
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths(manifest["sources"])
        resolve_identities(ws.engine, ws.pseudonymiser)
        largest = ws.engine.scalar("SELECT max(identifiers - store_session) FROM persons")
        accounts = ws.engine.scalar("SELECT max(account) FROM persons")
        assert accounts == 1 and largest < 40


@pytest.fixture(scope="module")
def medium_world(tmp_path_factory):
    from omnithread.sim import WorldConfig, simulate

    out = tmp_path_factory.mktemp("medium")
    return out, simulate(WorldConfig.demo(people=1_500, days=30, seed=21), out)


def test_too_few_records_to_learn_from_skip_matching_with_a_reason(small_world, workspace):
    out, manifest = small_world
    workspace.ingestor().ingest_paths(manifest["sources"])
    report = resolve_identities(workspace.engine, workspace.pseudonymiser)
    assert report.probabilistic_links == 0 and "fewer than the 500 needed" in report.probabilistic_skipped


def test_probabilistic_matching_links_sign_ups_to_accounts_correctly(medium_world, settings):
    out, manifest = medium_world
    owners = {}
    for row in pq.read_table(out / "truth" / "identifiers.parquet").to_pylist():
        if row["type"] in ("account", "signup"):
            owners[("account:" if row["type"] == "account" else "store_session:") + row["value"]] = row["person_id"]
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths(manifest["sources"])
        report = resolve_identities(ws.engine, ws.pseudonymiser)
        links = ws.engine.rows(
            "SELECT a, b, score FROM identity_edges WHERE list_contains(rules, 'probabilistic match')"
        )
        assert report.probabilistic_links == len(links) > 10
        assert all(link["score"] >= 0.999 for link in links)
        right = sum(owners.get(link["a"]) == owners.get(link["b"]) for link in links)
        assert right / len(links) > 0.9
        # names and addresses sit in their own table, which erasure can wipe
        assert ws.engine.scalar("SELECT count(*) FROM person_attributes") > 0
        off = resolve_identities(ws.engine, ws.pseudonymiser, IdentityConfig(match_threshold=None))
        assert off.probabilistic_links == 0


def test_sign_ups_that_arrive_later_are_matched_incrementally_with_the_learnt_model(medium_world, settings, tmp_path):
    from omnithread.identity import update_identities

    out, manifest = medium_world
    owners = {}
    for row in pq.read_table(out / "truth" / "identifiers.parquet").to_pylist():
        if row["type"] in ("account", "signup"):
            owners[("account:" if row["type"] == "account" else "store_session:") + row["value"]] = row["person_id"]
    # every third store sign-up arrives after the first full resolve
    early, late, held = [], [], set()
    for source in manifest["sources"]:
        if not source.endswith(".jsonl"):
            early.append(source)
            continue
        kept = []
        for line in Path(source).read_bytes().splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = None
            if (
                isinstance(event, dict)
                and event.get("type") == "identify"
                and "signup-" in str(event.get("anonymousId"))
                and zlib.crc32(event["anonymousId"].encode()) % 3 == 0
            ):
                late.append(event)
                held.add("store_session:" + event["anonymousId"])
            else:
                kept.append(line)
        early.append(write_lines(tmp_path / Path(source).name, kept))
    query = (
        "SELECT a, b, score, status FROM identity_edges WHERE list_contains(rules, 'probabilistic match') "
        "AND (a IN (SELECT unnest(?::VARCHAR[])) OR b IN (SELECT unnest(?::VARCHAR[])))"
    )
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths(early)
        resolve_identities(ws.engine, ws.pseudonymiser)
        assert ws.engine.rows(query, [sorted(held)] * 2) == []
        ws.ingestor().ingest_paths([write_lines(tmp_path / "late.jsonl", late)])
        update = update_identities(ws.engine, ws.pseudonymiser)
        links = ws.engine.rows(query, [sorted(held)] * 2)
        assert update.probabilistic_links == len(links) > 10
        assert all(link["score"] >= 0.999 for link in links)
        assert sum(owners.get(link["a"]) == owners.get(link["b"]) for link in links) / len(links) > 0.9
        # the sign-ups now sit in the persons of the accounts they matched
        person = {
            r["identifier"]: r["person_id"] for r in ws.engine.rows("SELECT identifier, person_id FROM identity_map")
        }
        kept = [link for link in links if link["status"] == "kept"]
        assert len(kept) > len(links) / 2 and all(person[link["a"]] == person[link["b"]] for link in kept)
        # and they are the links a full rebuild over the same log makes
        resolve_identities(ws.engine, ws.pseudonymiser)
        rebuilt = {(r["a"], r["b"]) for r in ws.engine.rows(query, [sorted(held)] * 2)}
        found = {(link["a"], link["b"]) for link in links}
        assert len(found & rebuilt) / len(rebuilt | found) > 0.9


def test_one_to_one_keeps_each_records_best_match_and_clusters_close_pairs():
    from omnithread.identity.matching import cluster_pairs, one_to_one

    pairs = [
        {"id_l": "a1", "id_r": "b1", "match_probability": 0.9},
        {"id_l": "a1", "id_r": "b2", "match_probability": 0.95},
        {"id_l": "a2", "id_r": "b2", "match_probability": 0.5},
        {"id_l": "a2", "id_r": "b1", "match_probability": 0.4},
    ]
    assert [(p["id_l"], p["id_r"]) for p in one_to_one(pairs)] == [("a1", "b2"), ("a2", "b1")]
    assert cluster_pairs(pairs[:1] + [{"id_l": "b1", "id_r": "c1", "match_probability": 1}]) == {
        ("a1", "b1"),
        ("b1", "c1"),
        ("a1", "c1"),
    }
