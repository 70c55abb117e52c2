"""One bad value never breaks a stage: numbers are refused past the schema's ranges at every door, and a
value that slipped into the log before the rule existed is left out and reported, never a failed build.
An erasure is all or nothing, and reaches the identifiers seen since the last resolution."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from omnithread.engine.log import EVENT_ARROW_SCHEMA
from omnithread.errors import ErasureFailedError, InvalidRequestError
from omnithread.events import validate_event
from omnithread.flows import erase
from omnithread.identity import resolve_identities
from omnithread.identity.lookup import find_person
from omnithread.ingest.till import check_till_row
from omnithread.profile import build_profiles, get_profile, skipped_rows
from omnithread.recommend.service import Recommendations
from omnithread.workspace import Workspace
from tests.conftest import write_lines

NOW = datetime(2026, 10, 1, 12, tzinfo=timezone.utc)
HUGE = [2**31, 10**30, 2**63]


def order(n, who, quantity, price=1.0, day=1):
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": who,
        "messageId": f"o{n}",
        "timestamp": f"2026-09-{day:02d}T10:00:00Z",
        "context": {"channel": "web"},
        "properties": {"order_id": f"O{n}", "products": [{"product_id": "P1", "quantity": quantity, "price": price}]},
    }


@pytest.mark.parametrize("quantity", HUGE)
def test_a_huge_quantity_is_refused_at_the_door_with_field_and_value(quantity):
    _, problems = validate_event(order(1, "u", quantity), NOW)
    assert [(p.code, p.field) for p in problems] == [("out_of_range", "properties.products[0].quantity")]
    assert str(quantity)[:10] in problems[0].message and "maximum" in problems[0].message


def test_money_and_counts_have_ceilings_on_every_known_event():
    _, problems = validate_event(order(1, "u", 1, price=1e12), NOW)
    assert [(p.code, p.field) for p in problems] == [("out_of_range", "properties.products[0].price")]
    entered = {
        "type": "track",
        "event": "Store Entered",
        "anonymousId": "v",
        "properties": {"store_id": "S1", "entry_method": "none", "group_size": 2**40},
    }
    assert [p.field for p in validate_event(entered, NOW)[1]] == ["properties.group_size"]


def test_a_till_row_takes_the_same_ranges_as_an_order_line():
    row = {
        "store_id": "S1",
        "till_id": "T",
        "timestamp": "2026-09-01T10:00:00",
        "order_id": "1",
        "product_id": "P",
        "quantity": str(2**31),
        "price": "inf",
    }
    assert sorted(p.field for p in check_till_row(row, 2) if p.code == "out_of_range") == ["price", "quantity"]


@pytest.mark.parametrize("path_kind", ["fast", "lines"])
def test_both_import_paths_refuse_the_huge_quantity(settings, tmp_path, path_kind):
    path = write_lines(tmp_path / "orders.jsonl", [order(1, "u1", 2), order(2, "u2", 2**31)])
    with Workspace(settings.with_(fast_path=path_kind == "fast")) as ws:
        report = ws.ingestor().ingest_paths([path])
        assert (report.accepted, report.rejected, dict(report.by_reason)) == (1, 1, {"out_of_range": 1})


def _slip_in(ws, payload: dict) -> None:
    """Store an event as a log written before the range rule existed holds it: straight into the table."""
    import pyarrow as pa

    row = {name: None for name in EVENT_ARROW_SCHEMA.names}
    at = datetime(2026, 9, 2, 10, tzinfo=timezone.utc)
    row.update(
        message_id=payload["messageId"],
        call="track",
        event=payload["event"],
        user_id=payload["userId"],
        channel="web",
        event_at=at,
        received_at=at,
        loaded_at=datetime.now(timezone.utc),
        properties=json.dumps(payload["properties"]),
    )
    ws.engine.insert_rows("events", pa.Table.from_pylist([row], schema=EVENT_ARROW_SCHEMA))


@pytest.mark.parametrize("quantity", [*HUGE, "lots", -3, 2.5])
def test_a_bad_value_already_in_the_log_is_left_out_and_reported_not_a_failed_stage(settings, tmp_path, quantity):
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths([write_lines(tmp_path / "ok.jsonl", [order(1, "alice", 2, price=3.0)])])
        _slip_in(ws, order(2, "alice", quantity))
        resolve_identities(ws.engine, ws.pseudonymiser)
        assert build_profiles(ws.engine) == 1
        profile = get_profile(ws.engine, find_person(ws.engine, "alice", ws.pseudonymiser))
        assert (profile["orders"], profile["items"], profile["revenue"]) == (1, 2, 6.0)
        skipped = skipped_rows(ws.engine, "profiles")
        assert [(r["message_id"], r["field"]) for r in skipped] == [("o2", "products[].quantity")]
        assert skipped[0]["value"] == str(quantity)
        # the other stages read the same log: training and serving go on
        service = Recommendations.train(ws.engine, ws.pseudonymiser, settings.data_dir / "models", tune_days=None)
        assert service.recommend("alice", "for_you", n=3).surface == "for_you"
        assert erase(ws, "alice", "suppress_and_delete").events_deleted == 2


def test_an_erasure_that_fails_part_way_changes_nothing(settings, tmp_path, monkeypatch):
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths(
            [write_lines(tmp_path / "log.jsonl", [order(1, "alice", 1), order(2, "bob", 1), order(3, "bob", 2, day=2)])]
        )
        resolve_identities(ws.engine, ws.pseudonymiser)
        build_profiles(ws.engine)
        models = settings.data_dir / "models"
        Recommendations.train(ws.engine, ws.pseudonymiser, models, tune_days=None)
        before = {f.name: f.read_bytes() for f in models.iterdir()}
        tables = {t: ws.engine.rows(f"SELECT * FROM {t} ORDER BY ALL") for t in ("events", "identity_map", "profiles")}

        def broken(*args, **kwargs):
            raise RuntimeError("the disk went away")

        monkeypatch.setattr(Recommendations, "train", broken)
        with pytest.raises(ErasureFailedError) as failed:
            erase(ws, "alice", "suppress_and_delete")
        assert "retraining" in str(failed.value) and "nothing was changed" in str(failed.value)
        for table, rows in tables.items():
            assert ws.engine.rows(f"SELECT * FROM {table} ORDER BY ALL") == rows, table
        assert (
            not ws.engine.has_table("suppressed_identifiers")
            or ws.engine.scalar("SELECT count(*) FROM suppressed_identifiers") == 0
        )
        assert ws.log.suppressed == frozenset()
        assert {f.name: f.read_bytes() for f in models.iterdir()} == before
        monkeypatch.undo()
        done = erase(ws, "alice", "suppress_and_delete")  # asked again, it completes
        assert done.events_deleted == 1 and done.model_retrained


def test_erasure_reaches_identifiers_seen_since_the_last_resolution(settings, tmp_path):
    first = [
        {
            "type": "identify",
            "userId": "acct-dave",
            "anonymousId": "dev-dave-1",
            "messageId": "d1",
            "timestamp": "2026-09-01T10:00:00Z",
            "traits": {"email": "dave@example.org"},
        }
    ]
    later = [
        {
            "type": "identify",
            "userId": "acct-dave",
            "anonymousId": "dev-dave-2",
            "messageId": "d3",
            "timestamp": "2026-09-02T10:00:00Z",
            "traits": {"phone": "07700 900481"},
        },
        {
            "type": "track",
            "anonymousId": "dev-dave-2",
            "messageId": "d4",
            "event": "Product Viewed",
            "timestamp": "2026-09-02T10:01:00Z",
            "properties": {"product_id": "P00109"},
        },
        {
            "type": "track",
            "anonymousId": "dev-dave-2",
            "messageId": "d5",
            "event": "Product Viewed",
            "timestamp": "2026-09-02T10:02:00Z",
            "properties": {"product_id": "P00373"},
        },
    ]
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths([write_lines(tmp_path / "1.jsonl", first)])
        resolve_identities(ws.engine, ws.pseudonymiser)
        ws.ingestor().ingest_paths([write_lines(tmp_path / "2.jsonl", later)])
        report = erase(ws, "acct-dave", "suppress_and_delete")
        assert report.identifiers == 5 and report.events_deleted == 4  # account, both devices, email, phone
        assert ws.engine.scalar("SELECT count(*) FROM events") == 0
        assert "dev-dave-2" in ws.log.suppressed
        again = ws.ingestor().ingest_paths([write_lines(tmp_path / "3.jsonl", [dict(later[1], messageId="d8")])])
        assert again.accepted == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"person": "x", "raw_values": 5}, "raw_values"),
        ({"person": "x", "raw_values": [1]}, "raw_values"),
        ({"person": 7}, "person"),
        ({"person": " "}, "person"),
        ({"person": "x", "mode": "shred"}, "mode"),
    ],
)
def test_an_erasure_request_with_a_bad_field_is_refused_naming_it(workspace, body, field):
    with pytest.raises(InvalidRequestError) as refused:
        erase(workspace, body["person"], body.get("mode", "suppress"), body.get("raw_values", ()))
    assert refused.value.field == field and refused.value.http_status == 400


def test_erasure_completes_on_a_simulated_retailer_whose_resolution_splits_components(small_world, settings):
    """Inside the erasure's transaction, the tables resolution creates number their rows from 2^55: the split
    of over-limit components numbers its nodes itself (it read row numbers as dense indices and failed)."""
    out, manifest = small_world
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths(manifest["sources"])
        report = resolve_identities(ws.engine, ws.pseudonymiser)
        assert report.split_components > 0
        build_profiles(ws.engine)
        Recommendations.train(ws.engine, ws.pseudonymiser, settings.data_dir / "models", tune_days=None)
        account = ws.engine.scalar(
            "SELECT identifier FROM identity_map WHERE identifier LIKE 'account:%' ORDER BY identifier LIMIT 1"
        ).split(":", 1)[1]
        before = ws.engine.scalar("SELECT count(*) FROM events")
        done = erase(ws, account, "suppress_and_delete")
        assert done.events_deleted > 0 and done.model_retrained
        assert ws.engine.scalar("SELECT count(*) FROM events") == before - done.events_deleted
        assert ws.engine.scalar("SELECT count(*) FROM identity_map WHERE identifier = ?", [f"account:{account}"]) == 0


def test_a_setting_error_while_retraining_does_not_delete_the_model(settings, tmp_path, monkeypatch):
    """Erasure read any ConfigError from training as 'nothing left to train on' and deleted every model file."""
    from omnithread.errors import ConfigError

    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths([write_lines(tmp_path / "log.jsonl", [order(1, "alice", 1), order(2, "bob", 1)])])
        resolve_identities(ws.engine, ws.pseudonymiser)
        models = settings.data_dir / "models"
        Recommendations.train(ws.engine, ws.pseudonymiser, models, tune_days=None)
        before = sorted(f.name for f in models.iterdir())

        def misconfigured(*args, **kwargs):
            raise ConfigError("dropout", 2, "a share in [0, 1)")

        monkeypatch.setattr(Recommendations, "train", misconfigured)
        with pytest.raises(ErasureFailedError):
            erase(ws, "alice", "delete")
        assert sorted(f.name for f in models.iterdir()) == before
        assert ws.engine.scalar("SELECT count(*) FROM events WHERE user_id = 'alice'") == 1
