"""Erasure: a person seeded on every channel is erased, and no row in any table still refers to them."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from omnithread.flows import erase, train_model
from omnithread.identity import IdentityConfig, resolve_identities
from omnithread.privacy import IdentifierType
from omnithread.profile import build_profiles
from omnithread.recommend.service import Recommendations
from omnithread.workspace import Workspace
from tests.conftest import write_lines

ERIN = {
    "email": "Erin.Doe@Example.com",
    "phone": "+44 7700 900123",
    "card": "LC-ERIN-0001",
    "pay": "tok_erin_42",
    "palm": "palm-erin-7",
    "account": "acct-erin",
    "devices": ["web-erin-1", "app-erin-1"],
    "visit": "visit-erin-1",
    "till": "till:S1:erin-1",
    "voice": "voice-erin-1",
}


def t(n, day, **fields):
    return {"messageId": f"m{n}", "timestamp": f"2026-09-{day:02d}T10:00:00Z", **fields}


def log_lines():
    web, app = ERIN["devices"]
    line = {"product_id": "P1", "quantity": 1, "price": 2.0}
    return [
        t(
            1,
            1,
            type="identify",
            userId=ERIN["account"],
            anonymousId=web,
            context={"channel": "web"},
            traits={
                "email": ERIN["email"],
                "phone": ERIN["phone"],
                "firstName": "Erin",
                "lastName": "Doe",
                "address": {"street": "1 Lane", "city": "Leeds", "postalCode": "LS1 1AA"},
            },
        ),
        t(
            2,
            1,
            type="track",
            event="Product Viewed",
            userId=ERIN["account"],
            anonymousId=web,
            context={"channel": "web"},
            properties={"product_id": "P1"},
        ),
        t(
            3,
            2,
            type="track",
            event="Order Completed",
            userId=ERIN["account"],
            anonymousId=app,
            context={"channel": "app"},
            properties={"order_id": "A1", "payment_token": ERIN["pay"], "products": [line]},
        ),
        # she enrolled her palm and linked her loyalty card in the app
        t(
            13,
            2,
            type="identify",
            userId=ERIN["account"],
            anonymousId=app,
            context={"channel": "app"},
            traits={"palm_token": ERIN["palm"]},
        ),
        t(
            14,
            2,
            type="track",
            event="Loyalty Card Linked",
            userId=ERIN["account"],
            anonymousId=app,
            context={"channel": "app"},
            properties={"loyalty_card": ERIN["card"]},
        ),
        t(
            4,
            3,
            type="track",
            event="Order Completed",
            anonymousId=ERIN["till"],
            context={"channel": "store", "store_id": "S1"},
            properties={
                "order_id": "T1",
                "loyalty_card": ERIN["card"],
                "payment_token": ERIN["pay"],
                "products": [line],
            },
        ),
        t(
            5,
            4,
            type="track",
            event="Store Entered",
            anonymousId=ERIN["visit"],
            context={"channel": "store", "store_id": "S9"},
            properties={"store_id": "S9", "entry_method": "palm", "entry_token": ERIN["palm"]},
        ),
        t(
            6,
            4,
            type="track",
            event="Product Picked",
            anonymousId=ERIN["visit"],
            context={"channel": "store", "store_id": "S9"},
            properties={"store_id": "S9", "product_id": "P2"},
        ),
        t(
            7,
            4,
            type="track",
            event="Order Completed",
            anonymousId=ERIN["visit"],
            context={"channel": "store", "store_id": "S9"},
            properties={"order_id": "R1", "payment_token": ERIN["pay"], "products": [line]},
        ),
        t(
            8,
            5,
            type="track",
            event="Order Completed",
            userId=ERIN["account"],
            anonymousId=ERIN["voice"],
            context={"channel": "voice"},
            properties={"order_id": "V1", "products": [line]},
        ),
        # Bob, a store shopper, once paid with Erin's card: the graph joins them through it
        t(
            9,
            5,
            type="track",
            event="Order Completed",
            anonymousId="till:S2:bob-1",
            context={"channel": "store", "store_id": "S2"},
            properties={
                "order_id": "B1",
                "loyalty_card": "LC-BOB-0001",
                "payment_token": ERIN["pay"],
                "products": [line],
            },
        ),
        t(
            10,
            6,
            type="track",
            event="Order Completed",
            anonymousId="till:S2:bob-2",
            context={"channel": "store", "store_id": "S2"},
            properties={"order_id": "B2", "loyalty_card": "LC-BOB-0001", "products": [{"product_id": "P3"}]},
        ),
        # a rejected event carrying her email, and a line so broken it is kept encrypted
        t(12, 7, type="identify", userId=ERIN["account"], traits={"email": ERIN["email"]}, context={"channel": 7}),
        f'{{"type": "identify", "traits": {{"email": "{ERIN["email"]}"'.encode(),
    ]


def needles(ws, person_ids):
    p = ws.pseudonymiser
    hashed = [
        p.hash(IdentifierType.EMAIL, ERIN["email"]),
        p.hash(IdentifierType.PHONE, ERIN["phone"]),
        p.hash(IdentifierType.LOYALTY_CARD, ERIN["card"]),
        p.hash(IdentifierType.PAYMENT_TOKEN, ERIN["pay"]),
        p.hash(IdentifierType.PALM_TOKEN, ERIN["palm"]),
    ]
    raw = [
        ERIN["email"],
        ERIN["email"].lower(),
        "7700900123",
        ERIN["card"],
        ERIN["pay"],
        ERIN["palm"],
        ERIN["account"],
        *ERIN["devices"],
        ERIN["visit"],
        ERIN["till"],
        ERIN["voice"],
        "Erin",
        "erin",
    ]
    return [*hashed, *raw, *person_ids]


def scan(ws, words, skip=()) -> list[str]:
    found = []
    for (table,) in ws.engine.query(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
    ).to_pylist() and [
        (r["table_name"],)
        for r in ws.engine.rows("SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'")
    ]:
        if table in skip:
            continue
        text = str(ws.engine.query(f"SELECT * FROM {table}").to_pylist())
        found += [f"{table}: {w}" for w in words if w in text]
    keys = ws.settings.data_dir / "keys.sqlite"
    if keys.exists():
        con = sqlite3.connect(keys)
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            text = str(con.execute(f"SELECT * FROM {table}").fetchall())
            found += [f"keys.sqlite {table}: {w}" for w in words if w in text]
        con.close()
    for f in (ws.settings.data_dir / "models").glob("*"):
        text = f.read_bytes().decode("latin-1")
        found += [f"{f.name}: {w}" for w in words if w in text]
    return found


@pytest.mark.parametrize("mode", ["delete", "suppress_and_delete"])
def test_erasure_leaves_no_row_that_refers_to_the_person(settings, tmp_path, mode):
    path = write_lines(tmp_path / "log.jsonl", log_lines())
    with Workspace(settings) as ws:
        report = ws.ingestor().ingest_paths([path])
        assert report.rejected == 2 and report.accepted == 12
        # a person may hold two loyalty cards here, so the card Erin borrowed joins her to Bob
        resolve_identities(
            ws.engine, ws.pseudonymiser, IdentityConfig(limits={**IdentityConfig().limits, "loyalty_card": 2})
        )
        build_profiles(ws.engine)
        Recommendations.train(ws.engine, ws.pseudonymiser, settings.data_dir / "models", tune_days=None)
        erin = ws.engine.scalar("SELECT person_id FROM identity_map WHERE identifier = 'account:acct-erin'")
        bob_card = "loyalty_card:" + ws.pseudonymiser.hash(IdentifierType.LOYALTY_CARD, "LC-BOB-0001")
        bob = ws.engine.scalar("SELECT person_id FROM identity_map WHERE identifier = ?", [bob_card])
        assert erin == bob  # the borrowed card joined them
        words = needles(ws, [erin])
        assert scan(ws, words), "the seeded person is everywhere before erasure"

        done = erase(ws, ERIN["email"], mode, raw_values=(ERIN["email"],))
        assert done.events_deleted >= 8 and done.rejected_deleted == 2
        skip = {"suppressed_identifiers"} if mode == "suppress_and_delete" else set()
        assert scan(ws, words, skip) == []
        # nor do her bytes survive in the free space of any file of the data directory
        kept = {r["value"] for r in ws.engine.rows("SELECT value FROM suppressed_identifiers")} if skip else set()
        blobs = b"".join(f.read_bytes() for f in settings.data_dir.rglob("*") if f.is_file())
        for word in [w for w in words if w not in kept and len(w) >= 5] + ["1 Lane", "Leeds", "LS1 1AA"]:
            assert word.encode() not in blobs, word
        # Bob is still there, split from her, with the order that did not carry her card
        assert ws.engine.scalar("SELECT count(*) FROM events WHERE anonymous_id LIKE 'till:S2:bob-%'") == 1
        bob_after = ws.engine.scalar("SELECT person_id FROM identity_map WHERE identifier = ?", [bob_card])
        assert bob_after is not None and bob_after != erin
        assert ws.engine.scalar("SELECT count(*) FROM profiles WHERE person_id = ?", [bob_after]) == 1
        assert done.model_retrained

        # suppression refuses her future events at the door; deletion alone does not
        again = write_lines(
            tmp_path / "again.jsonl",
            [
                t(
                    20,
                    8,
                    type="track",
                    event="Product Viewed",
                    userId=ERIN["account"],
                    anonymousId="new-device",
                    context={"channel": "web"},
                    properties={"product_id": "P9"},
                ),
                t(
                    21,
                    8,
                    type="identify",
                    anonymousId="other-device",
                    context={"channel": "web"},
                    traits={"email": ERIN["email"]},
                ),
            ],
        )
        later = ws.ingestor().ingest_paths([again])
        if mode == "suppress_and_delete":
            assert later.accepted == 0 and ws.log.refused_suppressed == 2
            assert scan(ws, [ERIN["account"]], skip) == []
        else:
            assert later.accepted == 2


def test_a_training_under_way_cannot_bring_an_erased_person_back(settings, tmp_path, monkeypatch):
    """A server's scheduled training that read the log before an erasure must not swap its model in after
    the erasure's own: one training at a time, the erasure's included."""
    path = write_lines(tmp_path / "log.jsonl", log_lines())
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths([path])
        resolve_identities(ws.engine, ws.pseudonymiser)
        build_profiles(ws.engine)
        train_model(ws)
        erin = ws.engine.scalar("SELECT person_id FROM identity_map WHERE identifier = 'account:acct-erin'")
        index = settings.data_dir / "models" / "index.json"
        assert erin in json.loads(index.read_text())["persons"]
        real, has_read = Recommendations.train, threading.Event()

        def slowed(cls, *args, **kwargs):
            model = real(*args, **kwargs)
            if threading.current_thread().name == "scheduled training":
                has_read.set()
                time.sleep(2.0)  # trained on the log as it was, not yet swapped in
            return model

        monkeypatch.setattr(Recommendations, "train", classmethod(slowed))
        with Workspace(settings) as other:
            beside = threading.Thread(target=train_model, args=(other,), name="scheduled training")
            beside.start()
            assert has_read.wait(30)
            erase(ws, ERIN["email"], "delete")
            beside.join(30)
        assert erin not in json.loads(index.read_text())["persons"]
