"""Catalogue and inventory import: what is stored, what changes nothing, what is refused and why."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from omnithread.ingest import replay_rejected
from omnithread.ingest.reference import catalogue_facts, stock_levels
from omnithread.workspace import Workspace
from tests.conftest import write_lines

CATALOGUE = """product_id,name,category,price,available,launched_at
P1,Tea,groceries,2.50,true,2026-01-01
P2,Kettle,home,-3,maybe,yesterday
P3,Old mug,home,4,false,
,Orphan,home,1,,
P4,Plain,,,,
"""


def reasons(ws) -> dict[str, dict[str, str]]:
    """source -> {field: value} of every open rejected row."""
    import json

    return {
        r["source"]: {p["field"]: p["value"] for p in json.loads(r["reasons"])} for r in ws.log.rejected(status="open")
    }


def test_catalogue_rows_are_stored_and_bad_ones_kept_with_field_and_value(tmp_path, settings):
    path = tmp_path / "catalogue.csv"
    path.write_text(CATALOGUE)
    with Workspace(settings) as ws:
        report = ws.ingestor().ingest_reference([path], "catalogue")
        assert (report.accepted, report.duplicates, report.rejected) == (3, 0, 2)
        rows = {r["product_id"]: r for r in ws.engine.rows("SELECT * FROM catalogue")}
        assert set(rows) == {"P1", "P3", "P4"}
        assert rows["P1"]["price"] == 2.5 and rows["P1"]["available"] is True
        assert rows["P4"]["available"] is True and rows["P4"]["price"] is None  # blank optional values
        assert catalogue_facts(ws.engine)["unavailable"] == {"P3"}
        assert reasons(ws) == {
            f"{path}:3": {"price": "'-3'", "available": "'maybe'", "launched_at": "'yesterday'"},
            f"{path}:5": {"product_id": "''"},
        }
        # the same file again changes nothing and keeps no second copy of the refused rows
        again = ws.ingestor().ingest_reference([path], "catalogue")
        assert (again.accepted, again.duplicates, again.rejected_stored) == (0, 3, 0)
        # a changed row replaces its product's
        path.write_text("product_id,price,available\nP1,3.10,false\n")
        ws.ingestor().ingest_reference([path], "catalogue")
        p1 = ws.engine.rows("SELECT * FROM catalogue WHERE product_id = 'P1'")
        assert len(p1) == 1 and p1[0]["price"] == 3.1 and p1[0]["available"] is False and p1[0]["name"] is None


def test_a_spreadsheet_export_with_a_byte_order_mark_and_odd_values(tmp_path, settings):
    path = tmp_path / "catalogue.csv"
    path.write_bytes("\ufeffproduct_id,price,available\nP1,1.5,YES\nP2,NaN,\n".encode("utf-8"))
    lines = write_lines(
        tmp_path / "catalogue.jsonl",
        [{"product_id": {"id": 3}}, {"product_id": "P4", "price": True}, {"product_id": 5, "available": False}],
    )
    with Workspace(settings) as ws:
        report = ws.ingestor().ingest_reference([path, lines], "catalogue")
        assert (report.accepted, report.rejected) == (2, 3)
        assert {r["product_id"]: r["available"] for r in ws.engine.rows("SELECT * FROM catalogue")} == {
            "P1": True,
            "5": False,
        }
        assert reasons(ws) == {
            f"{path}:3": {"price": "'NaN'"},
            f"{lines}:1": {"product_id": "{'id': 3}"},
            f"{lines}:2": {"price": "True"},
        }


def test_inventory_keeps_the_newest_count_and_reads_json_lines_and_parquet(tmp_path, settings):
    day = datetime(2026, 10, 1, tzinfo=UTC)
    lines = write_lines(
        tmp_path / "stock.jsonl",
        [
            {"store_id": "S01", "product_id": "P1", "quantity": 5, "as_of": day.isoformat()},
            {"store_id": "S01", "product_id": "P2", "quantity": "lots"},
            b"not json",
            {"store_id": "online", "product_id": "P1", "quantity": 0, "as_of": day.isoformat()},
            {"store_id": "S01", "product_id": "P1", "quantity": 7, "as_of": (day - timedelta(days=1)).isoformat()},
        ],
    )
    with Workspace(settings) as ws:
        report = ws.ingestor().ingest_reference([lines], "inventory")
        # the older count of S01/P1 in the same file loses to the newer one
        assert (report.accepted, report.duplicates, report.rejected) == (2, 1, 2)
        assert stock_levels(ws.engine, "S01") == {"P1": 5.0}
        assert stock_levels(ws.engine, "online") == {"P1": 0.0}
        assert stock_levels(ws.engine, "S99") is None  # nothing imported there: unknown, not empty
        assert reasons(ws) == {f"{lines}:2": {"quantity": "'lots'"}, f"{lines}:3": {"": "line 3"}}
        # a late export of an older count does not undo the newer one; a newer one replaces it
        older = tmp_path / "older.parquet"
        pq.write_table(
            pa.table({"store_id": ["S01"], "product_id": ["P1"], "quantity": [9], "as_of": [day - timedelta(days=2)]}),
            older,
        )
        assert ws.ingestor().ingest_reference([older], "inventory").duplicates == 1
        assert stock_levels(ws.engine, "S01") == {"P1": 5.0}
        newer = tmp_path / "newer.csv"
        newer.write_text(f"store_id,product_id,quantity,as_of\nS01,P1,0,{(day + timedelta(hours=1)).isoformat()}\n")
        assert ws.ingestor().ingest_reference([newer], "inventory").accepted == 1
        assert stock_levels(ws.engine, "S01") == {"P1": 0.0}


def test_refused_reference_rows_replay_after_a_fix(tmp_path, settings):
    ahead = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    path = tmp_path / "stock.csv"
    path.write_text(f"store_id,product_id,quantity,as_of\nS01,P1,4,{ahead}\n")
    missing = tmp_path / "later.csv"
    with Workspace(settings) as ws:
        report = ws.ingestor().ingest_reference([path, missing], "inventory")
        assert report.rejected == 2 and report.by_reason == {"future_timestamp": 1, "not_found": 1}
        _, replayed, failing = replay_rejected(ws.ingestor())
        assert replayed == [] and len(failing) == 2  # the file is still missing; the count still ahead
    missing.write_text("store_id,product_id,quantity\nS02,P2,3\n")
    with Workspace(settings.with_(max_future=timedelta(days=7))) as ws:
        _, replayed, failing = replay_rejected(ws.ingestor())
        assert len(replayed) == 2 and failing == []
        assert stock_levels(ws.engine, "S01") == {"P1": 4.0} and stock_levels(ws.engine, "S02") == {"P2": 3.0}
        assert ws.log.rejected(status="open") == []
