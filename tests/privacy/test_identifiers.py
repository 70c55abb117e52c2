import os
import stat

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from omnithread.errors import ConfigError
from omnithread.privacy import (
    IdentifierError,
    IdentifierType,
    PayloadCipher,
    Pseudonymiser,
    Secret,
    is_hashed,
    load_secret,
    normalise_email,
    normalise_phone,
    normalise_token,
    pseudonymise_payload,
)

SECRET = Secret(b"test-secret-material-0123456789")
P = Pseudonymiser(SECRET)
C = PayloadCipher(SECRET)


def test_email_is_trimmed_and_lower_cased():
    assert normalise_email("  Jane.Doe@Example.COM\t") == "jane.doe@example.com"


@pytest.mark.parametrize("bad", ["", "jane", "jane@", "@example.com", "jane@example", "a b@example.com", 42])
def test_bad_emails_name_the_field_and_mask_the_value(bad):
    with pytest.raises(IdentifierError) as info:
        normalise_email(bad, "traits.email")
    problem = info.value.problem
    assert problem.field == "traits.email" and problem.code == "invalid_identifier"
    if isinstance(bad, str) and len(bad) > 1:
        assert bad not in problem.message  # a raw identifier never reaches a message


@pytest.mark.parametrize(
    "raw", ["07700 900123", "+44 7700 900123", "+447700900123", "(07700) 900-123", "0044 7700 900123"]
)
def test_phones_in_any_format_become_one_e164(raw):
    assert normalise_phone(raw, region="GB") == "+447700900123"


def test_us_numbers_with_a_us_region():
    assert normalise_phone("(415) 555-2671", region="US") == "+14155552671"


@pytest.mark.parametrize("bad", ["hello", "12", "+44", True, None])
def test_bad_phones_are_refused(bad):
    with pytest.raises(IdentifierError):
        normalise_phone(bad)


def test_loyalty_cards_lose_spacing_and_case():
    assert normalise_token(IdentifierType.LOYALTY_CARD, " lc12-3456 7890 ", "card") == "LC1234567890"
    assert normalise_token(IdentifierType.LOYALTY_CARD, 1234567890, "card") == "1234567890"


def test_hash_format_and_type_separation():
    card = P.hash(IdentifierType.LOYALTY_CARD, "12345678")
    token = P.hash(IdentifierType.PAYMENT_TOKEN, "12345678")
    assert card.startswith("lc_") and token.startswith("pt_") and card[3:] != token[3:]
    assert is_hashed(card) and len(card) == 35


def test_hash_depends_on_the_secret():
    other = Pseudonymiser(Secret(b"another-secret-material-012345"))
    assert other.hash(IdentifierType.EMAIL, "a@example.com") != P.hash(IdentifierType.EMAIL, "a@example.com")


def test_a_hash_of_another_type_is_refused():
    email_hash = P.hash(IdentifierType.EMAIL, "a@example.com")
    with pytest.raises(IdentifierError):
        P.hash(IdentifierType.PHONE, email_hash)


emails = st.builds(
    lambda local, domain, tld, pad1, pad2, upper: f"{pad1}{local.upper() if upper else local}@{domain}.{tld}{pad2}",
    st.from_regex(r"[a-z0-9._+-]{1,12}", fullmatch=True),
    st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True),
    st.from_regex(r"[a-z]{2,5}", fullmatch=True),
    st.sampled_from(["", " ", "  "]),
    st.sampled_from(["", " ", "\t"]),
    st.booleans(),
)


@given(emails)
def test_email_normalisation_is_idempotent_and_hash_is_stable(email):
    once = normalise_email(email)
    assert normalise_email(once) == once
    hashed = P.hash(IdentifierType.EMAIL, email)
    assert hashed == P.hash(IdentifierType.EMAIL, once) == P.hash(IdentifierType.EMAIL, hashed)


@given(st.one_of(st.text(max_size=40), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=True)))
@hsettings(max_examples=300)
def test_only_our_error_escapes_the_normalisers(value):
    for kind in IdentifierType:
        try:
            result = P.hash(kind, value)
        except IdentifierError:
            continue
        assert is_hashed(result) and result.startswith(kind.code + "_")


@given(st.integers(min_value=7_000_000_000, max_value=7_999_999_999))
def test_uk_mobile_formats_agree(number):
    national = f"0{number}"
    assert normalise_phone(national) == normalise_phone(f"+44{number}") == normalise_phone(f"+44 {number}")


def test_secret_is_created_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("OMNITHREAD_SECRET", raising=False)
    first = load_secret(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode)
    assert mode == 0o600 and load_secret(tmp_path) == first


def test_secret_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNITHREAD_SECRET", "x" * 32)
    assert load_secret(tmp_path) == Secret(b"x" * 32)
    assert not (tmp_path / "secret.key").exists()
    monkeypatch.setenv("OMNITHREAD_SECRET", "short")
    with pytest.raises(ConfigError):
        load_secret(tmp_path)


def test_payload_pseudonymisation_covers_every_section():
    payload = {
        "userId": "Jane@Example.com",
        "traits": {"email": "jane@example.com", "phone": "07700 900123", "firstName": "Jane"},
        "context": {"traits": {"email_address": "JANE@example.com"}},
        "properties": {"loyalty_card": "LC 1234 5678", "payment_token": "tok_abcdef", "palm_template": "b64..."},
    }
    problems = pseudonymise_payload(payload, P, C)
    assert [p.code for p in problems] == ["biometric_data"]
    email = P.hash(IdentifierType.EMAIL, "jane@example.com")
    assert payload["userId"] == payload["traits"]["email"] == payload["context"]["traits"]["email_address"] == email
    assert payload["traits"]["phone"] == P.hash(IdentifierType.PHONE, "+447700900123")
    assert payload["properties"]["loyalty_card"] == P.hash(IdentifierType.LOYALTY_CARD, "LC12345678")
    assert "b64" not in str(payload) and payload["traits"]["firstName"] == "Jane"


def test_an_identifier_that_cannot_be_normalised_is_encrypted_not_kept():
    payload = {"traits": {"email": "jane@nowhere"}}
    problems = pseudonymise_payload(payload, P, C)
    assert problems[0].field == "traits.email"
    assert "jane" not in payload["traits"]["email"] and C.is_encrypted(payload["traits"]["email"])
    assert C.decrypt_value(payload["traits"]["email"]) == "jane@nowhere"


def test_store_entered_token_is_typed_by_its_method():
    payload = {"event": "Store Entered", "properties": {"entry_method": "palm", "entry_token": "palm_abc123"}}
    assert pseudonymise_payload(payload, P, C) == []
    assert payload["properties"]["entry_token"] == P.hash(IdentifierType.PALM_TOKEN, "palm_abc123")


def test_a_store_entry_with_a_malformed_method_keeps_its_token_encrypted():
    payload = {"event": "Store Entered", "properties": {"entry_method": ["palm"], "entry_token": "palm_abc123"}}
    pseudonymise_payload(payload, P, C)
    assert C.is_encrypted(payload["properties"]["entry_token"])
