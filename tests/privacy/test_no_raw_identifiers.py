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


# -- identifiers placed where nobody expects them ---------------------------------------------------------
JANE = "Jane.Doe+Shop@Example.org"
PHONE = "07700 900468"
IP = "203.0.113.77"


def unexpected_places() -> list:
    """Calls a careless client sends: identifiers under odd keys, nested, in URLs, free text, ids and keys."""
    base = {"timestamp": "2026-09-01T10:00:00Z"}
    return [
        {
            **base,
            "type": "identify",
            "messageId": "u1",
            "userId": "+447700900463",
            "traits": {"Email": JANE, "contact_email": "jane+c@example.org", "EMAIL_ADDRESS": JANE.upper()},
            "context": {
                "ip": IP,
                "page": {
                    "url": "https://shop.example/?email=jane.doe%2Bshop%40example.org",
                    "referrer": f"https://mail.example/read?from={JANE}",
                },
            },
        },
        {
            **base,
            "type": "track",
            "event": "Product Viewed",
            "messageId": "u2",
            "anonymousId": PHONE,
            "properties": {
                "product_id": "P1",
                "url": "https://x.example/?phone=07700900468",
                "customer": {"email": JANE, "phone": PHONE, "notes": [f"call {PHONE} or {JANE}"]},
                JANE: "a key that is an email",
            },
        },
        {
            **base,
            "type": "page",
            "messageId": "u3",
            "userId": "acct-jane",
            "name": f"Welcome back {JANE}",
            "properties": {"search": "?q=jane.doe%252Bshop%2540example.org", "title": f"Ring us: {PHONE}"},
        },
        {**base, "type": "alias", "messageId": "u4", "userId": "acct-jane", "previousId": "07700900468"},
        {**base, "type": "group", "messageId": "u5", "userId": "acct-jane", "groupId": JANE},
        {
            **base,
            "type": "track",
            "event": f"Newsletter {JANE}",
            "messageId": f"u6-{JANE}",
            "userId": "acct-jane",
            "context": {"traits": {"Mobile": PHONE}, "X-Forwarded-For": f"{IP}, 198.51.100.23"},
        },
        # refused events keep their payloads: scrubbed the same way
        {
            **base,
            "type": "track",
            "event": "Order Completed",
            "messageId": "u7",
            "userId": "acct-jane",
            "properties": {
                "order_id": "O1",
                "products": [{"product_id": "P1", "quantity": f"for {JANE}"}],
                "comment": f"deliver to {PHONE}",
            },
        },
        {
            **base,
            "type": "track",
            "event": "Product Viewed",
            "messageId": "u8",
            "userId": "acct-jane",
            "properties": {"product_id": "P1"},
            "unexpectedTopLevel": {"owner": JANE, "tel": PHONE},
        },
    ]


def raw_forms() -> set[str]:
    return {
        JANE,
        JANE.lower(),
        JANE.upper(),
        "jane.doe%2Bshop%40example.org",
        "jane.doe%252Bshop%2540example.org",
        "jane.doe+shop",
        "jane+c@example.org",
        "jane+c",
        PHONE,
        "07700900468",
        "7700900468",
        "7700 900468",
        "+447700900463",
        "7700900463",
        IP,
        "198.51.100.23",
    }


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "python-path"])
def test_identifiers_where_nobody_expects_them_never_reach_storage(settings, tmp_path, fast_path):
    from tests.conftest import write_lines

    path = write_lines(tmp_path / "odd.jsonl", unexpected_places())
    till = tmp_path / "till-S9.csv"
    till.write_text(
        "store_id,till_id,timestamp,order_id,product_id,quantity,price,loyalty_card\n"
        f"S9,T1,2026-09-01T10:00:00,T1,P1,{JANE},1.0,LC12345678\n"
        f"S9,T1,2026-09-01T10:00:00,T2,P1,1,1.0,{PHONE}\n"
    )
    with Workspace(settings.with_(fast_path=fast_path)) as ws:
        report = ws.ingestor().ingest_paths([path, till])
        assert report.accepted == 8 and report.rejected == 2, report.as_dict()
        text = ""
        for table in (t["table_name"] for t in ws.engine.rows("SELECT table_name FROM duckdb_tables()")):
            text += str(ws.engine.query(f"SELECT * FROM {table}").to_pylist())
        assert {s for s in raw_forms() if s in text} == set()
        assert "203.0.113.0" in text  # the address, truncated to its network
    blobs = b"".join(p.read_bytes() for p in settings.data_dir.rglob("*") if p.is_file())
    assert {s for s in raw_forms() if s.encode() in blobs} == set()


def test_identifiers_in_odd_places_are_stored_alike_by_both_paths(settings, tmp_path, monkeypatch):
    """The fast path screens in SQL and hands hits to the one rule: what it stores equals the Python path's."""
    from tests.conftest import assert_same, both_paths, write_lines

    monkeypatch.setenv("OMNITHREAD_SECRET", "conformance-secret-0123456789")
    path = write_lines(tmp_path / "odd.jsonl", unexpected_places())
    assert_same(*both_paths(tmp_path, settings, [path]))
