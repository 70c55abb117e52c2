"""Import from every format: what is stored, what is a duplicate, what is rejected and why."""

import json
from datetime import timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from omnithread.ingest import replay_rejected
from omnithread.privacy import IdentifierType
from omnithread.workspace import Workspace
from tests.conftest import write_lines

GOOD = {
    "type": "track",
    "event": "Product Viewed",
    "userId": "u1",
    "messageId": "good-1",
    "properties": {"product_id": "P1", "price": 2.5},
    "timestamp": "2026-09-01T10:00:00Z",
    "context": {"channel": "web"},
}


def good(n: int, **changes) -> dict:
    return dict(GOOD, messageId=f"good-{n}", **changes)


def rejected_by_source(ws) -> dict[str, list[str]]:
    return {r["source"]: r["reason_codes"] for r in ws.log.rejected(status=None)}


BROKEN = [
    good(1),
    b'{"type": "track", "event": "Product Viewed", "userId": "u1"',  # 2 truncated JSON
    good(3),
    b'{"type": "page", "userId": "caf\xe9"}',  # 4 not UTF-8
    {"type": "track", "event": "Product Viewed", "properties": {"product_id": "P1"}},  # 5 no identity
    {"type": "trak", "userId": "u1"},  # 6 unknown call
    good(7, properties={"product_id": "P1", "price": "9,99"}),  # 7 wrong type
    good(8, timestamp="2031-06-01T00:00:00Z"),  # 8 years ahead
    good(9, properties={"product_id": "P1", "blob": "x" * 40_000}),  # 9 over 32 KB
    [good(10)],  # 10 not an object
    good(11, traits={"email": "jane@"}),  # 11 bad identifier
    good(12),
    good(1),  # 13 retry of line 1
]
EXPECTED = {
    2: "invalid_json",
    4: "invalid_utf8",
    5: "missing_identity",
    6: "unknown_call",
    7: "invalid_type",
    8: "future_timestamp",
    9: "event_too_large",
    10: "not_an_object",
    11: "invalid_identifier",
}


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "python-path"])
def test_every_bad_line_is_kept_with_its_reason_and_every_good_line_stored(tmp_path, settings, fast_path):
    path = write_lines(tmp_path / "broken.jsonl", BROKEN)
    with Workspace(settings.with_(fast_path=fast_path)) as ws:
        report = ws.ingestor().ingest_paths([path])
        assert (report.accepted, report.duplicates, report.rejected) == (3, 1, len(EXPECTED))
        stored = {r["message_id"] for r in ws.engine.rows("SELECT message_id FROM events")}
        assert stored == {"good-1", "good-3", "good-12"}
        by_source = rejected_by_source(ws)
        assert {int(s.rsplit(":", 1)[1]): codes for s, codes in by_source.items()} == {
            line: [code] for line, code in EXPECTED.items()
        }
        assert report.by_reason == {code: 1 for code in EXPECTED.values()}


def test_the_count_of_stored_events_is_exact(tmp_path, workspace):
    path = write_lines(tmp_path / "broken.jsonl", BROKEN)
    report = workspace.ingestor().ingest_paths([path])
    assert report.received == len(BROKEN)
    assert workspace.log.count() == 3  # good-1, good-3, good-12; good-11 has a bad email
    assert report.accepted == 3 and report.duplicates == 1


def test_ingesting_the_same_input_twice_stores_nothing_new(small_world, workspace):
    out, manifest = small_world
    first = workspace.ingestor().ingest_paths(manifest["sources"])
    events, rejected = workspace.log.count(), len(workspace.log.rejected(status=None))
    second = workspace.ingestor().ingest_paths(manifest["sources"])
    assert first.accepted > 5_000 and second.accepted == 0 and second.rejected_stored == 0
    assert second.duplicates == first.accepted + first.duplicates
    assert (workspace.log.count(), len(workspace.log.rejected(status=None))) == (events, rejected)


def test_every_malformed_line_of_the_simulator_is_rejected(small_world, workspace):
    out, manifest = small_world
    workspace.ingestor().ingest_paths(manifest["sources"])
    truth = [orjson.loads(line) for line in (out / "truth" / "malformed.jsonl").read_bytes().splitlines()]
    rejected = {r["source"] for r in workspace.log.rejected(status=None)}
    lines = [t for t in truth if "line" in t]
    assert lines and all(f"{out / 'sources' / t['file']}:{t['line']}" in rejected for t in lines)
    till_orders = {t["order_id"] for t in truth if t["kind"] == "till_price"}
    rejected_orders = {
        json.loads(r["payload"])["rows"][0]["order_id"]
        for r in workspace.log.rejected(status=None)
        if r["format"] == "till_csv"
    }
    assert till_orders == rejected_orders


def test_a_missing_file_and_an_empty_file_are_reported(tmp_path, workspace):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    report = workspace.ingestor().ingest_paths([empty, tmp_path / "nope.jsonl"])
    assert report.by_reason == {"empty_file": 1, "not_found": 1}
    # replayed while still empty and missing, both keep their records; once there, the file is imported
    _, replayed, failing = replay_rejected(workspace.ingestor())
    assert replayed == [] and len(failing) == 2
    write_lines(tmp_path / "nope.jsonl", [good(1)])
    _, replayed, failing = replay_rejected(workspace.ingestor())
    assert len(replayed) == 1 and len(failing) == 1
    assert workspace.engine.scalar("SELECT count(*) FROM events WHERE message_id = 'good-1'") == 1


TILL_HEADER = "store_id,till_id,timestamp,order_id,product_id,quantity,price,loyalty_card,payment_token\n"


def test_till_rows_are_grouped_into_orders_even_when_interleaved(tmp_path, workspace):
    path = tmp_path / "till.csv"
    path.write_text(
        TILL_HEADER
        + "S1,T1,2026-09-01T10:00:00,A,P1,2,1.50,LC 1234 5678,tok_1234\n"
        + "S1,T2,2026-09-01T10:00:30,B,P9,1,3.00,,\n"
        + "S1,T1,2026-09-01T10:00:00,A,P2,1,4.00,LC 1234 5678,tok_1234\n"
    )
    report = workspace.ingestor().ingest_paths([path])
    assert report.accepted == 2
    order = workspace.engine.rows("SELECT * FROM events WHERE properties->>'order_id' = 'A'")[0]
    props = json.loads(order["properties"])
    assert order["channel"] == "store" and order["store_id"] == "S1" and order["anonymous_id"] == "till:S1:A"
    assert props["total"] == 7.0 and [p["product_id"] for p in props["products"]] == ["P1", "P2"]
    assert props["loyalty_card"] == workspace.pseudonymiser.hash(IdentifierType.LOYALTY_CARD, "LC12345678")
    assert "1234 5678" not in order["properties"]
    assert workspace.ingestor().ingest_paths([path]).accepted == 0


def test_a_till_export_with_a_byte_order_mark_keeps_its_first_column(tmp_path, workspace):
    path = tmp_path / "till.csv"
    path.write_bytes(("\ufeff" + TILL_HEADER + "S1,T1,2026-09-01T10:00:00,A,P1,2,1.50,,\n").encode("utf-8"))
    report = workspace.ingestor().ingest_paths([path])
    assert report.accepted == 1 and report.rejected == 0
    assert workspace.engine.scalar("SELECT store_id FROM events WHERE properties->>'order_id' = 'A'") == "S1"


def test_a_till_row_with_a_bad_price_rejects_its_order_with_the_line(tmp_path, workspace):
    path = tmp_path / "till.csv"
    path.write_text(
        TILL_HEADER
        + "S1,T1,2026-09-01T10:00:00,A,P1,2,abc,,\n"
        + "S1,T1,2026-09-01T10:00:00,A,P2,1,4.00,,\nS1,T1,2026-09-01T11:00:00,C,P3,1,1.00,,\n"
    )
    report = workspace.ingestor().ingest_paths([path])
    assert report.accepted == 1 and report.by_reason == {"invalid_number": 1}
    record = workspace.log.rejected()[0]
    assert "line 2: price: 'abc' is not a number" in record["reasons"]
    assert len(json.loads(record["payload"])["rows"]) == 2


def test_a_till_export_without_a_column_keeps_every_row(tmp_path, workspace):
    path = tmp_path / "till.csv"
    path.write_text(
        "store_id,till_id,timestamp,order_id,product_id,quantity\n"
        "S1,T1,2026-09-01T10:00:00,A,P1,2\nS1,T1,2026-09-01T10:00:00,A,P2,1\n"
    )
    report = workspace.ingestor().ingest_paths([path])
    assert report.rejected == 2 and report.by_reason == {"missing_column": 2}
    assert "column 'price' is missing" in workspace.log.rejected()[0]["reasons"]


def test_a_till_row_that_is_not_utf8_is_kept_encrypted(tmp_path, workspace):
    path = tmp_path / "till.csv"
    path.write_bytes(TILL_HEADER.encode() + b"S1,T1,2026-09-01T10:00:00,A,P\xe91,2,1.00,LC12345678,\n")
    report = workspace.ingestor().ingest_paths([path])
    assert report.by_reason == {"invalid_utf8": 1}
    payload = workspace.log.rejected()[0]["payload"]
    assert "LC12345678" not in payload and "encrypted_row" in payload


def test_a_batch_shares_sent_at_and_context_and_is_refused_whole_past_500_kb(tmp_path, workspace):
    batch = {
        "batch": [
            {"type": "page", "anonymousId": "a1", "messageId": "b1", "originalTimestamp": "2026-09-01T10:00:00Z"},
            {"type": "page", "anonymousId": "a2", "messageId": "b2", "originalTimestamp": "2026-09-01T10:00:00Z"},
        ],
        "sentAt": "2026-09-01T10:00:02Z",
        "context": {"channel": "app"},
    }
    big = {"batch": [good(n, properties={"product_id": "P", "pad": "x" * 20_000}) for n in range(30)]}
    path = write_lines(tmp_path / "batches.jsonl", [batch, big])
    report = workspace.ingestor().ingest_paths([path])
    assert report.accepted == 2 and report.by_reason == {"batch_too_large": 1}
    rows = workspace.engine.rows("SELECT channel, sent_at FROM events ORDER BY message_id")
    assert {r["channel"] for r in rows} == {"app"} and all(r["sent_at"] is not None for r in rows)


def test_json_arrays_and_parquet_of_segment_events(tmp_path, workspace):
    array = tmp_path / "events.json"
    array.write_bytes(orjson.dumps([good(1), good(2)]))
    table = pa.table(
        {
            "type": ["track"],
            "event": ["Product Viewed"],
            "userId": ["u9"],
            "messageId": ["pq-1"],
            "properties": [orjson.dumps({"product_id": "P7"}).decode()],
            "timestamp": pa.array([pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py().replace(year=2026)]),
        }
    )
    pq.write_table(table, tmp_path / "events.parquet")
    report = workspace.ingestor().ingest_paths([array, tmp_path / "events.parquet"])
    assert report.accepted == 3
    row = workspace.engine.rows("SELECT properties FROM events WHERE message_id = 'pq-1'")[0]
    assert json.loads(row["properties"]) == {"product_id": "P7"}


def test_parquet_till_exports_are_read_as_tills(tmp_path, workspace):
    pq.write_table(
        pa.table(
            {
                "store_id": ["S1", "S1"],
                "till_id": ["T1", "T1"],
                "timestamp": ["2026-09-01T10:00:00", "2026-09-01T10:00:00"],
                "order_id": ["A", "A"],
                "product_id": ["P1", "P2"],
                "quantity": [1, 3],
                "price": [1.0, 2.0],
            }
        ),
        tmp_path / "till.parquet",
    )
    report = workspace.ingestor().ingest_paths([tmp_path / "till.parquet"])
    assert report.accepted == 1
    assert json.loads(workspace.engine.rows("SELECT properties FROM events")[0]["properties"])["total"] == 7.0


def test_replay_after_a_fix_stores_what_now_passes(tmp_path, settings):
    path = write_lines(tmp_path / "late.jsonl", [good(1, timestamp="2026-12-30T00:00:00Z"), b"{broken"])
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths([path])
        assert {tuple(r["reason_codes"]) for r in ws.log.rejected()} == {("future_timestamp",), ("invalid_json",)}
        report, replayed, failing = replay_rejected(ws.ingestor())
        assert (replayed, len(failing), report.accepted) == ([], 2, 0)
    # the fix: this retailer's devices legitimately run far ahead
    with Workspace(settings.with_(max_future=timedelta(days=400))) as ws:
        report, replayed, failing = replay_rejected(ws.ingestor(), reason="future_timestamp")
        assert report.accepted == 1 and len(replayed) == 1 and failing == []
        assert ws.log.count() == 1
        assert [r["reason_codes"] for r in ws.log.rejected()] == [["invalid_json"]]
        still = ws.log.rejected()[0]
        assert still["attempts"] == 1
        assert replay_rejected(ws.ingestor(), reason="future_timestamp")[1] == []


def test_replay_decrypts_what_it_kept_encrypted(tmp_path, settings):
    path = write_lines(tmp_path / "bad.jsonl", [good(1, traits={"email": "jane@example"}, type="identify")])
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths([path])
        record = ws.log.rejected()[0]
        assert "jane" not in record["payload"]
        report, replayed, failing = replay_rejected(ws.ingestor())
        assert failing == [record["rejected_id"]]
        assert "jane@example" not in ws.log.rejected()[0]["reasons"]  # reasons show only a masked value


def test_chunked_reading_matches_reading_whole(tmp_path, settings, small_world):
    out, manifest = small_world
    source = Path(manifest["sources"][0])
    with Workspace(settings) as ws:
        whole = ws.ingestor().ingest_paths([source]).as_dict()
    with Workspace(settings.with_(data_dir=tmp_path / "chunked", import_chunk_bytes=200_000)) as ws:
        chunked = ws.ingestor().ingest_paths([source]).as_dict()
    for key in ("accepted", "duplicates", "rejected", "rejected_by_reason"):
        assert whole[key] == chunked[key]


def test_calls_without_a_message_id_keep_genuine_repeats_and_import_again_as_nothing_new(tmp_path, settings):
    """An id derived from content alone dropped the second of two identical calls; it is derived from the
    content and the line (file) or moment of receipt (collector) now."""
    same = {"type": "track", "event": "Product Viewed", "userId": "n", "properties": {"product_id": "P1"}}
    path = write_lines(tmp_path / "twice.jsonl", [same, same])
    with Workspace(settings) as ws:
        assert ws.ingestor().ingest_paths([path]).accepted == 2
        copy = tmp_path / "elsewhere" / "twice.jsonl"
        copy.parent.mkdir()
        copy.write_bytes(path.read_bytes())
        again = ws.ingestor().ingest_paths([copy])
        assert (again.accepted, again.duplicates) == (0, 2)
        from datetime import UTC, datetime

        for _ in range(2):  # the collector: two calls a moment apart are two events
            collector = ws.ingestor(received_at=datetime.now(UTC))
            collector.submit_payload(dict(same), f"http:k:{collector.received_at.isoformat()}#0")
            collector.flush()
            assert collector.report.accepted == 1
        assert ws.log.count() == 4
        ids = [r["message_id"] for r in ws.engine.rows("SELECT message_id FROM events")]
        assert all(i.startswith("derived-") for i in ids) and len(set(ids)) == 4


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "python-path"])
@pytest.mark.parametrize("levels", [40, 300, 1000])
def test_a_call_nested_too_deep_is_refused_alone_and_its_batch_stored(tmp_path, settings, fast_path, levels):
    deep = '{"a":' * levels + '"jane@example.org"' + "}" * levels
    batch = [good(i) for i in range(99)]
    body = orjson.dumps({"batch": batch}).decode()[:-2] + (
        ',{"type":"track","userId":"u","messageId":"deep","event":"Product Viewed",'
        '"properties":{"product_id":"P1","n":' + deep + "}}]}"
    )
    single = '{"type":"track","userId":"u","messageId":"deep-1","event":"x","properties":{"n":' + deep + "}}"
    path = tmp_path / "deep.jsonl"
    path.write_text(body + "\n" + single + "\n")
    with Workspace(settings.with_(fast_path=fast_path)) as ws:
        report = ws.ingestor().ingest_paths([path])
        assert (report.accepted, report.rejected, dict(report.by_reason)) == (99, 2, {"too_deep": 2})
        kept = ws.log.rejected(status=None)
        assert all("more than 32 levels" in r["reasons"] for r in kept)
        assert not any("jane@example.org" in (r["payload"] or "") for r in kept)  # the deep part is encrypted
