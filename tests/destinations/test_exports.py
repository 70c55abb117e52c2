"""Audience exports for ad platforms: each platform's normalisation and SHA-256 against published vectors,
the contact vault (consented rows only, no raw value stored anywhere), and the files."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest

from omnithread.analytics.audiences import create_audience
from omnithread.destinations import exports
from omnithread.errors import InvalidRequestError, NotFoundError
from omnithread.flows import erase, record_consent

# "user@example.com" -> b4c9a289...: the worked example of UID2's "Normalization and Encoding" page (and of
# Pinterest's conversion tag docs); the others follow the platforms' published rules from it
USER_EXAMPLE = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"


def test_published_vector_and_each_platforms_rules():
    values = exports.platform_values("  User@Example.COM ", None)
    assert values["google_email"] == values["meta_email"] == USER_EXAMPLE
    assert values["google_phone"] is None and values["meta_phone"] is None
    # Google (Customer Match, Campaign Manager 360): no dots before @ for gmail.com and googlemail.com
    gmail = exports.platform_values("Jane.Doe@Gmail.com", None)
    assert gmail["google_email"] == exports.platform_values("janedoe@gmail.com", None)["google_email"]
    assert gmail["meta_email"] == exports.platform_values("jane.doe@gmail.com", None)["meta_email"]
    assert gmail["google_email"] != gmail["meta_email"]
    other = exports.platform_values("jane.doe@example.com", None)
    assert other["google_email"] == other["meta_email"]  # dots elsewhere stay
    # phones: Google hashes E.164 (+44...), Meta the digits with the country code and no +
    phone = exports.platform_values(None, "07700 900123", region="GB")
    assert phone["google_phone"] == hashlib.sha256(b"+447700900123").hexdigest()
    assert phone["meta_phone"] == hashlib.sha256(b"447700900123").hexdigest()
    assert exports.platform_values(None, "+44 7700 900123")["meta_phone"] == phone["meta_phone"]


@pytest.fixture
def ws(handmade):
    return handmade


CONTACTS = [
    {"user_id": "alice", "email": "Alice.Smith@Gmail.com", "phone": "07700 900123", "advertising_consent": "true"},
    {"user_id": "bob", "email": "bob@example.com", "advertising_consent": "false"},
    {"user_id": "carol", "email": "nobody-at-nowhere", "advertising_consent": "yes"},
    {"user_id": "dave", "advertising_consent": "yes"},
]


def test_the_vault_keeps_only_consented_platform_hashes_encrypted(ws):
    report = exports.import_contacts(ws.engine, ws.pseudonymiser, ws.cipher, CONTACTS, "crm")
    assert (report["rows"], report["stored"], report["without_consent"]) == (4, 1, 1)
    assert [(r["row"], r["field"]) for r in report["refused"]] == [(3, "email"), (4, "email")]
    assert "nobody-at-nowhere" not in json.dumps(report)  # the value is never repeated
    stored = ws.engine.rows("SELECT * FROM contact_vault")
    assert len(stored) == 1 and stored[0]["nodes"][0] == "account:alice"
    text = json.dumps(stored, default=str)
    expected = exports.platform_values("Alice.Smith@Gmail.com", "07700 900123")
    # no raw value and not even a platform hash in the clear: sealed with the data directory's key
    for needle in ("alice.smith", "Alice.Smith", "7700", expected["meta_email"], expected["google_phone"]):
        assert needle not in text
    assert json.loads(ws.cipher.decrypt_value(stored[0]["sealed"])) == expected
    # consent withdrawn by a later list: the row goes
    again = exports.import_contacts(
        ws.engine, ws.pseudonymiser, ws.cipher, [dict(CONTACTS[0], advertising_consent="no")]
    )
    assert again["withdrawn"] == 1 and ws.engine.scalar("SELECT count(*) FROM contact_vault") == 0


def test_an_audience_exports_per_platform_and_honours_a_later_refusal(ws, tmp_path):
    exports.import_contacts(ws.engine, ws.pseudonymiser, ws.cipher, CONTACTS)
    create_audience(ws.engine, "buyers", "orders >= 1")  # Alice and the card holder (no contact)
    google = exports.export_audience(ws.engine, ws.cipher, "buyers", "google", tmp_path / "google.csv")
    assert (google["members"], google["exported_persons"], google["without_contact"]) == (2, 1, 1)
    expected = exports.platform_values("Alice.Smith@Gmail.com", "07700 900123")
    with open(tmp_path / "google.csv") as f:
        assert list(csv.reader(f)) == [["Email", "Phone"], [expected["google_email"], expected["google_phone"]]]
    exports.export_audience(ws.engine, ws.cipher, "buyers", "meta", tmp_path / "meta.csv")
    with open(tmp_path / "meta.csv") as f:
        assert list(csv.reader(f)) == [["email", "phone"], [expected["meta_email"], expected["meta_phone"]]]
    # Alice refuses advertising in the log: she is no longer exported, whatever the CRM list said
    record_consent(ws, "alice", {"advertising": False}, source="test")
    after = exports.export_audience(ws.engine, ws.cipher, "buyers", "google", tmp_path / "after.csv")
    assert (after["exported_persons"], after["refused_advertising"]) == (0, 1)
    with pytest.raises(InvalidRequestError, match="platform"):
        exports.export_audience(ws.engine, ws.cipher, "buyers", "myspace", tmp_path / "x.csv")
    with pytest.raises(NotFoundError):
        exports.export_audience(ws.engine, ws.cipher, "nobody", "google", tmp_path / "x.csv")


def test_erasure_removes_the_vaulted_contact(ws):
    exports.import_contacts(ws.engine, ws.pseudonymiser, ws.cipher, CONTACTS)
    erase(ws, "alice")
    assert ws.engine.scalar("SELECT count(*) FROM contact_vault") == 0
