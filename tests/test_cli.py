"""The command line, end to end on the embedded default."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnithread.cli.main import app
from tests.conftest import write_lines

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def run_json(*args: str):
    return json.loads(run(*args, "--json").stdout)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> str:
    monkeypatch.delenv("OMNITHREAD_SECRET", raising=False)
    return str(tmp_path / "data")


def test_demo_runs_every_step_and_reports(tmp_path, data_dir):
    report = run_json(
        "demo", "--people", "300", "--days", "10", "--data-dir", data_dir, "--sources", str(tmp_path / "sources")
    )
    ingest = report["ingest"]
    assert ingest["accepted"] > 1_000 and ingest["duplicates"] > 0 and ingest["rejected"] > 0
    assert {row["channel"] for row in report["stats"]["by_channel"]} >= {"web", "app", "store"}
    assert (tmp_path / "sources" / "truth" / "orders.parquet").exists()
    assert report["identity"]["persons"] > 0 and 0 < report["identity_accuracy"]["pairwise"]["f1"] <= 1
    sensing = report["sensing"]  # the checkout-free store's last days went through sensors and the engine
    assert sensing["trips_sensed"] > 0 and sensing["plate_messages"] > 100_000 and sensing["f1"] > 0.9
    assert 0 < sensing["receipts_in_log"] <= sensing["trips_sensed"]
    text = run("demo", "--people", "300", "--days", "10", "--data-dir", data_dir).stdout
    assert "Rejected by reason" in text and "Events by channel" in text


def test_ingest_stats_and_rejected(tmp_path, data_dir):
    path = write_lines(
        tmp_path / "e.jsonl",
        [
            {"type": "page", "anonymousId": "a", "messageId": "m1", "context": {"channel": "web"}},
            {"type": "trak", "anonymousId": "a", "messageId": "m2"},
        ],
    )
    report = run_json("ingest", str(path), "--data-dir", data_dir)
    assert (report["accepted"], report["rejected"], report["rejected_by_reason"]) == (1, 1, {"unknown_call": 1})
    assert run_json("ingest", str(path), "--data-dir", data_dir)["accepted"] == 0
    stats = run_json("stats", "--data-dir", data_dir)
    assert stats["by_channel"][0]["channel"] == "web" and stats["rejected_by_reason"][0]["reason"] == "unknown_call"
    listed = run_json("rejected", "list", "--data-dir", data_dir)
    assert listed[0]["reasons"][0].startswith("type: 'trak' is not a call type")
    shown = json.loads(run("rejected", "show", listed[0]["rejected_id"], "--data-dir", data_dir).stdout)
    assert shown["payload"]["type"] == "trak"
    replay = run_json("rejected", "replay", "--data-dir", data_dir)
    assert replay["still_failing"] == 1 and replay["replayed"] == 0
    assert "Events by day" in run("stats", "--data-dir", data_dir).stdout


def test_rejected_show_of_an_unknown_id_fails_clearly(data_dir):
    result = runner.invoke(app, ["rejected", "show", "nope", "--data-dir", data_dir])
    assert result.exit_code == 2 and "no rejected event with id 'nope'" in result.output


def test_simulate_writes_sources_and_truth(tmp_path):
    manifest = run_json("simulate", str(tmp_path / "w"), "--people", "100", "--days", "5")
    assert manifest["people"] == 100 and all(Path(p).exists() for p in manifest["sources"])
    assert (tmp_path / "w" / "truth" / "identifiers.parquet").exists()


def test_a_bad_option_names_the_setting(tmp_path):
    result = runner.invoke(app, ["simulate", str(tmp_path / "w"), "--people", "0"])
    assert result.exit_code == 2 and "people" in result.output


def test_the_readme_documents_every_command():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert readme.index("make demo") < readme.index("make test") < 600
    for command in (
        "omnithread demo",
        "omnithread ingest",
        "omnithread stats",
        "omnithread rejected list",
        "omnithread rejected show",
        "omnithread rejected replay",
        "omnithread simulate",
        "omnithread resolve",
        "omnithread person",
        "omnithread sensing simulate",
        "omnithread sensing run",
        "omnithread sensing evaluate",
        "omnithread train",
        "omnithread recommend",
        "omnithread evaluate",
        "omnithread serve",
        "omnithread keys create",
        "omnithread keys list",
        "omnithread keys revoke",
        "omnithread consent",
        "omnithread erase",
        "omnithread catalogue",
        "omnithread inventory",
        "omnithread recommend --all",
    ):
        assert command in readme, command


def test_resolve_and_person(tmp_path, data_dir):
    path = write_lines(
        tmp_path / "e.jsonl",
        [
            {
                "type": "identify",
                "userId": "alice",
                "anonymousId": "d1",
                "messageId": "m1",
                "traits": {"email": "Alice@Example.com"},
                "context": {"channel": "web"},
            },
            {
                "type": "track",
                "event": "Order Completed",
                "anonymousId": "till:S1:1",
                "messageId": "m2",
                "context": {"channel": "store", "store_id": "S1"},
                "properties": {
                    "order_id": "1",
                    "products": [{"product_id": "P"}],
                    "total": 5.0,
                    "payment_token": "tok_a1",
                },
            },
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "alice",
                "anonymousId": "d1",
                "messageId": "m3",
                "context": {"channel": "web"},
                "properties": {
                    "order_id": "2",
                    "products": [{"product_id": "P"}],
                    "total": 7.0,
                    "payment_token": "tok_a1",
                },
            },
        ],
    )
    run("ingest", str(path), "--data-dir", data_dir)
    result = runner.invoke(app, ["person", "alice", "--data-dir", data_dir])
    assert result.exit_code == 2 and "run `omnithread resolve` first" in result.output
    report = run_json("resolve", "--data-dir", data_dir)
    assert report["persons"] == 1 and report["connection"]["store_revenue_known_online_customer_share"] == 1.0
    assert report["skipped_rows"] == []
    found = run_json("person", "alice@example.com", "--data-dir", data_dir)
    assert {i["identifier_type"] for i in found["identifiers"]} >= {"account", "email", "store_session"}
    assert "Evidence" in run("person", "alice", "--data-dir", data_dir).stdout
    missing = runner.invoke(app, ["person", "nobody", "--data-dir", data_dir])
    assert missing.exit_code == 2 and "no person with id 'nobody'" in missing.output


def test_resolve_on_an_empty_log_reports_nothing_rather_than_a_share(data_dir):
    report = run_json("resolve", "--data-dir", data_dir)
    assert report["persons"] == 0 and report["connection"]["store_revenue_known_online_customer_share"] is None
    assert "there is no store revenue yet" in run("resolve", "--data-dir", data_dir).stdout
    assert "fewer than the 500 needed" in report["probabilistic_skipped"]


def test_sensing_simulate_run_and_evaluate(tmp_path, data_dir):
    rec = tmp_path / "rec"
    made = run_json("sensing", "simulate", str(rec), "--family", "handoff", "--trips", "2", "--gondolas", "2")
    assert made["trips"] == 2 and made["plate_messages"] > 1_000
    assert {p.name for p in rec.iterdir()} == {"layout.json", "plates.parquet", "messages.jsonl", "truth.json"}
    with open(rec / "messages.jsonl", "a") as handle:  # a message from a plate the store does not have
        handle.write(
            json.dumps(
                {"kind": "plate", "plate_id": "NOPE", "seq": 0, "t": made["store_seconds"], "samples": [0.0] * 12}
            )
            + "\n"
        )
    out = run_json("sensing", "run", str(rec), "--ingest", "--data-dir", data_dir)
    assert out["receipts"] == 2 and out["problems"] == 1 and out["duplicates_ignored"] > 0
    assert out["ingest"]["accepted"] > 0 and out["ingest"]["rejected"] == 0
    problems = [json.loads(line) for line in (rec / "problems.jsonl").read_text().splitlines()]
    assert problems[0]["code"] == "unknown_plate" and problems[0]["message"]["plate_id"] == "NOPE"
    stats = run_json("stats", "--data-dir", data_dir)
    assert {row["event"] for row in stats["by_event"]} >= {"Store Entered", "Product Picked", "Order Completed"}
    scored = run_json("sensing", "evaluate", str(rec))
    assert scored["trips"] == 2 and scored["f1"] == 1.0 and scored["exact_receipts"] == 1.0
    result = runner.invoke(app, ["sensing", "run", str(tmp_path)])
    assert result.exit_code == 2 and "layout.json" in result.output


def test_train_recommend_and_evaluate(tmp_path, data_dir):
    report = run_json(
        "demo", "--people", "300", "--days", "14", "--data-dir", data_dir, "--sources", str(tmp_path / "w")
    )
    assert report["recommend"]["stats"]["tuning"]["model"] in {"dlae", "ease", "itemknn", "als"}
    assert set(report["ablation"]["variants"]) >= {"siloed", "joined", "ceiling"}
    trained = run_json("train", "--new-share", "0.5", "--data-dir", data_dir)
    assert trained["interactions"] > 0 and trained["signals"]["weights"]["order"] > 0
    person = report["recommend"]["example"]["person_id"]
    mine = run_json("recommend", person, "-n", "4", "--data-dir", data_dir)
    assert mine["surface"] == "for_you" and mine["person_id"] == person and len(mine["items"]) == 4
    assert mine["meta"]["new_products_shown"] == 2  # half the slots, as trained; the world launched three
    refused = runner.invoke(app, ["train", "--new-share", "2", "--data-dir", data_dir])
    assert refused.exit_code == 2 and "--new-share" in refused.output and "2.0" in refused.output
    run_json("train", "--data-dir", data_dir)
    trending = run_json("recommend", "--surface", "trending", "-n", "3", "--data-dir", data_dir)
    assert trending["surface"] == "trending" and len(trending["items"]) == 3
    stranger = run_json("recommend", "nobody@example.com", "--data-dir", data_dir)
    assert stranger["surface"] == "trending" and "unknown person" in stranger["fallback_reason"]
    result = runner.invoke(app, ["recommend", "--surface", "similar", "--product", "NOPE", "--data-dir", data_dir])
    assert result.exit_code == 2 and "NOPE" in result.output
    # the demo imported the world's catalogue and stock; stats shows them, recommendations say they used them
    stats = run_json("stats", "--data-dir", data_dir)["reference"]
    assert stats["catalogue"]["products"] > 0 and {r["location"] for r in stats["inventory"]} >= {"online"}
    assert mine["meta"]["availability"] == "inventory of online"
    assert (
        run_json("inventory", str(tmp_path / "w" / "reference" / "inventory.csv"), "--data-dir", data_dir)["accepted"]
        == 0
    )  # the same counts again change nothing
    everyone = run_json("recommend", "--all", "--out", str(tmp_path / "all.parquet"), "-n", "3", "--data-dir", data_dir)
    assert everyone["persons"] == report["identity"]["persons"] and everyone["rows"] == 3 * everyone["persons"]
    assert runner.invoke(app, ["recommend", "--all", "--data-dir", data_dir]).exit_code == 2  # no --out
    scored = run_json(
        "evaluate", "--truth", str(tmp_path / "w" / "truth"), "--chart", str(tmp_path / "a.svg"), "--data-dir", data_dir
    )
    assert {"popularity", "dlae", "als"} <= set(scored["temporal"]["models"])
    assert scored["ablation"]["variants"]["ceiling"]["all"]["users"] > 0
    assert (tmp_path / "a.svg").read_text().startswith("<svg")


def test_keys_consent_and_erase_commands(tmp_path, data_dir):
    made = run_json("keys", "create", "--role", "read", "--name", "dash", "--data-dir", data_dir)
    assert made["key"].startswith("otk_read_") and made["role"] == "read"
    listed = run_json("keys", "list", "--data-dir", data_dir)
    assert [k["key_id"] for k in listed] == [made["key_id"]] and "key" not in listed[0]
    assert run_json("keys", "revoke", made["key_id"], "--data-dir", data_dir)["revoked_at"]
    result = runner.invoke(app, ["keys", "create", "--role", "root", "--data-dir", data_dir])
    assert result.exit_code == 2 and "root" in result.output
    path = write_lines(
        tmp_path / "e.jsonl",
        [
            {
                "type": "identify",
                "userId": "acct-q",
                "anonymousId": "d-q",
                "messageId": "q1",
                "traits": {"email": "q@example.com"},
                "context": {"channel": "web"},
            },
            {
                "type": "track",
                "event": "Product Viewed",
                "userId": "acct-q",
                "anonymousId": "d-q",
                "messageId": "q2",
                "properties": {"product_id": "P1"},
                "context": {"channel": "web"},
            },
        ],
    )
    run("ingest", str(path), "--data-dir", data_dir)
    given = run_json("consent", "q@example.com", "--set", "personalisation=false", "--data-dir", data_dir)
    assert given["purposes"] == {"personalisation": False}
    erased = run_json("erase", "q@example.com", "--mode", "delete", "--data-dir", data_dir)
    assert erased["events_deleted"] == 3  # the two events and the consent event
    assert run_json("stats", "--data-dir", data_dir)["by_channel"] == []


def test_resolve_reports_a_bad_value_stored_before_the_door_checked_it(data_dir):
    """A quantity of 2^31 broke `omnithread resolve` (exit 2); it is left out of the profiles and reported."""
    import duckdb

    from omnithread.config import Settings
    from omnithread.workspace import Workspace

    with Workspace(Settings(data_dir=data_dir)):
        pass  # the data directory and its tables
    con = duckdb.connect(str(Path(data_dir) / "omnithread.duckdb"))
    con.execute("""INSERT INTO events (message_id, call, event, user_id, channel, event_at, received_at, loaded_at,
                   properties) VALUES ('poison-1', 'track', 'Order Completed', 'poison', 'web', now(), now(), now(),
                   '{"order_id":"o1","products":[{"product_id":"P","quantity":2147483648,"price":1}]}')""")
    con.close()
    report = run_json("resolve", "--data-dir", data_dir)
    assert report["profiles"] == 1 and [(r["message_id"], r["value"]) for r in report["skipped_rows"]] == [
        ("poison-1", "2147483648")
    ]
    assert "left out 1 order line" in run("resolve", "--data-dir", data_dir).stdout
