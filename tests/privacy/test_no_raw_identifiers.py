"""No raw email, phone, card, token or palm value lies anywhere in the data directory.

The simulated retailer's truth knows every raw identifier it sent; after importing
its sources (malformed lines and rejected payloads included), every table of the
database and every file of the data directory is scanned for each of them, in the
forms the sources wrote them.
"""

import pyarrow.parquet as pq
import pytest

from omnithread.workspace import Workspace

SENSITIVE = ("email", "phone", "loyalty_card", "payment_token", "palm_token", "app_code")


def raw_values(truth_dir) -> set[str]:
    table = pq.read_table(truth_dir / "identifiers.parquet").to_pylist()
    values = set()
    for row in table:
        if row["type"] in SENSITIVE and row["value"]:
            value = row["value"]
            values.update({value, value.lower(), value.upper()})
            if row["type"] == "phone":  # the national form the store desks write
                values.add("0" + value[3:])
    return values


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "python-path"])
def test_nothing_raw_reaches_the_data_directory(small_world, settings, fast_path):
    out, manifest = small_world
    secrets = raw_values(out / "truth")
    assert len(secrets) > 1_000
    with Workspace(settings.with_(fast_path=fast_path)) as ws:
        report = ws.ingestor().ingest_paths(manifest["sources"])
        assert report.rejected > 0  # rejected payloads are part of what is scanned
        found = set()
        tables = [t["table_name"] for t in ws.engine.rows("SELECT table_name FROM duckdb_tables()")]
        assert {"events", "rejected_events"} <= set(tables)
        for table in tables:
            rows = ws.engine.query(f"SELECT * FROM {table}").to_pylist()
            text = "\n".join(str(v) for row in rows for v in row.values())
            found |= {s for s in secrets if s in text}
        assert found == set()
    # every file, the database file included, byte by byte
    blobs = b"".join(path.read_bytes() for path in settings.data_dir.rglob("*") if path.is_file())
    leaked = {s for s in secrets if s.encode() in blobs}
    assert leaked == set()
