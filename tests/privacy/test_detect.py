"""The personal-data rule: identifiers recognised wherever they arrive, and one definition for every door.

Known answers for keys, free text, URLs and ids; what is not personal stays as it is; a property test holds
the engine's screen to covering everything the rule changes (so the fast path, which screens in SQL and
hands hits to this rule, stores what the Python path stores); and the simulated retailer's own data is left
alone where it holds no identifier.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import orjson
import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from omnithread.events.schema import BIOMETRIC_KEYS
from omnithread.privacy import IdentifierType, PayloadCipher, Pseudonymiser, Secret, pseudonymise_payload
from omnithread.privacy.detect import KEY_HINTS, KEY_WORDS, PersonalData, key_family, screen_hits, screen_sql

SECRET = Secret(b"personal-data-test-secret-0123")
P = Pseudonymiser(SECRET)
RULE = PersonalData(P, PayloadCipher(SECRET))
EM = P.hash(IdentifierType.EMAIL, "jane.doe@example.org")
PH = P.hash(IdentifierType.PHONE, "+447700900481")


@pytest.mark.parametrize(
    "key, family",
    [
        ("email", "email"),
        ("Email", "email"),
        ("EMAIL_ADDRESS", "email"),
        ("contactEmail", "email"),
        ("contact_email", "email"),
        ("e-mail", "email"),
        ("phone", "phone"),
        ("homePhone", "phone"),
        ("Phone Number", "phone"),
        ("mobile", "phone"),
        ("tel", "phone"),
        ("loyaltyCardNumber", "loyalty_card"),
        ("ip", "ip"),
        ("IPAddress", "ip"),
        ("clientIp", "ip"),
        ("X-Forwarded-For", "ip"),
        ("email_opt_in", None),
        ("phone_verified", None),
        ("zip", None),
        ("shipping", None),
        ("hotel", None),
        ("postalCode", None),
        ("description", None),
        ("product_id", None),
    ],
)
def test_keys_are_read_by_their_last_words(key, family):
    assert key_family(key) == family


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Jane.Doe@Example.org", EM),
        ("a@b.co", P.hash(IdentifierType.EMAIL, "a@b.co")),
        ("write to jane.doe@example.org today", f"write to {EM} today"),
        ("<jane.doe@example.org>", f"<{EM}>"),
        ("mailto:jane.doe@example.org", f"mailto:{EM}"),
        ("https://shop.example/?email=jane.doe%40example.org&utm=1", f"https://shop.example/?email={EM}&utm=1"),
        ("https://shop.example/?r=%2F%3Femail%3Djane.doe%2540example.org", f"https://shop.example/?r=/?email={EM}"),
        ("call +44 7700 900481 after six", f"call {PH} after six"),
        ("call 07700 900481", f"call {PH}"),
        ("(07700) 900-481", PH),
        ("0044 7700 900 481", PH),
        ("https://x.example/?phone=07700900481", f"https://x.example/?phone={PH}"),
        ("tel:+447700900481", f"tel:{PH}"),
    ],
)
def test_emails_and_phones_are_found_inside_any_string(text, expected):
    assert RULE.text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "P00109",
        "sim7-0000000001",
        "2026-09-01T10:00:00.123+01:00",
        "01/02/2026",
        "01.02.2026 10:00",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.129 Safari/537.36",
        "analytics.js 4.1.0",
        "12.99",
        "1234567",
        "@handle",
        "a @ b",
        "100% cotton",
        "50%off",
        "LS1 1AA",
        "order 0123",
        "em_" + "0" * 32,
        "enc1:abcdef",
        "192.168.0.10",
        "v2.0.0.1234567",
    ],
)
def test_what_holds_no_identifier_is_left_as_it_is(text):
    assert RULE.text(text) == text


@given(
    st.datetimes(timezones=st.timezones() | st.none()),
    st.sampled_from(["T", " "]),
    st.sampled_from(["auto", "seconds", "milliseconds", "microseconds", "minutes"]),
)
@hsettings(max_examples=300, deadline=None)
def test_iso_timestamps_hold_nothing_the_rule_changes(moment, sep, spec):
    """The Python path leaves ISO timestamps out of the text it screens: the rule must find nothing in one."""
    from omnithread.privacy.detect import _TIMESTAMP

    text = moment.isoformat(sep=sep, timespec=spec)
    for written in (text, text.replace("+00:00", "Z")):
        if _TIMESTAMP.fullmatch(written):
            assert RULE.text(written) == written


def test_ids_that_are_identifiers_become_their_hashes_and_link_like_traits():
    assert RULE.identifier_id("+447700900481") == PH == RULE.identifier_id("07700 900481")
    assert RULE.identifier_id("jane.doe@example.org") == EM
    assert RULE.identifier_id("user:jane.doe@example.org") == f"user:{EM}"
    assert RULE.identifier_id("acct-123456789") == "acct-123456789"


def test_keyed_values_at_any_depth_and_ip_addresses():
    payload = {
        "userId": "07700 900481",
        "groupId": "jane.doe@example.org",
        "properties": {
            "customer": {"Email": "JANE.DOE@example.org", "mobile": 447700900481, "email": "not an email"},
            "notes": ["ring 07700 900481"],
            "jane.doe@example.org": 1,
        },
        "context": {"ip": "203.0.113.77", "page": {"url": "https://s.example/?e=jane.doe%40example.org"}},
    }
    RULE.payload(payload)
    customer = payload["properties"]["customer"]
    assert (payload["userId"], payload["groupId"], customer["Email"], customer["mobile"]) == (PH, EM, EM, PH)
    assert customer["email"].startswith("enc1:")  # under an email key, not an email: kept only encrypted
    assert payload["properties"]["notes"] == [f"ring {PH}"] and EM in payload["properties"]
    assert payload["context"] == {"ip": "203.0.113.0", "page": {"url": f"https://s.example/?e={EM}"}}
    hashing = PersonalData(P, PayloadCipher(SECRET), ip_mode="hash")
    assert re.fullmatch(r"ip_[0-9a-f]{32}", hashing.ip("203.0.113.77"))
    assert hashing.ip("203.0.113.77") == hashing.ip("203.0.113.77") != hashing.ip("203.0.113.78")
    assert RULE.ip("2001:db8:1234:5678::1") == "2001:db8:1234::" and RULE.ip("1.2.3.4, 5.6.7.8") == "1.2.3.0, 5.6.7.0"


def test_the_rule_is_idempotent():
    payload = {
        "userId": "+447700900481",
        "traits": {"contact_email": "a@b.co", "note": "x 07700 900481"},
        "context": {"ip": "2001:db8::7"},
    }
    RULE.payload(payload)
    once = orjson.dumps(payload)
    RULE.payload(payload)
    assert orjson.dumps(payload) == once


# -- one rule: the engine's screen covers everything the rule changes -------------------------------------
_pieces = st.sampled_from(
    [
        "palm",
        "tok_abcd",
        "LC12345678",
        "ph_" + "2" * 32,
        "pa_" + "3" * 32,
        "jane.doe@example.org",
        "@",
        "%40",
        "%2540",
        "07700 900481",
        "+44",
        "0044",
        "(0",
        "7700",
        "900481",
        " ",
        ".",
        "-",
        "/",
        "(",
        ")",
        "+",
        "0",
        "1",
        "7",
        "x",
        "é",
        "\n",
        "\t",
        '"',
        "\\",
        "\u0000",
        "email",
        "Phone",
        "ip",
        "=",
        "?",
        "&",
        "P00109",
        "em_" + "1" * 32,
    ]
)
_strings = st.lists(_pieces, max_size=8).map("".join)
_keys = st.one_of(
    st.sampled_from(
        [
            "email",
            "contactEmail",
            "mobile",
            "ip",
            "note",
            "url",
            "a",
            "X-Forwarded-For",
            "postalCode",
            "tel",
            "entry_token",
            "entry_method",
            "loyalty_card",
            "payment_token",
            "palm_template",
            "emailAddress",
            "phoneNumber",
        ]
    ),
    _strings,
)
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12), _strings),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)


_DB = duckdb.connect()


def _engine_screen(text: str) -> bool:
    return _DB.execute(f"SELECT {screen_sql('?')}", [text]).fetchall()[0][0]


def test_every_key_the_rule_reads_holds_a_word_the_screens_look_for():
    for spelling in KEY_WORDS:  # each spelling has a word the Python screen finds, as a key never splits one
        assert any(hint in word for word in spelling.split() for hint in KEY_HINTS), spelling
    for key in [*KEY_WORDS, *BIOMETRIC_KEYS, "Contact-EMAIL", "X_Forwarded_For", "clientIP", 'my \\"email']:
        text = orjson.dumps({key: 1}).decode()
        assert screen_hits(text) and _engine_screen(text), key
    assert (key_family("Ph_one"), key_family("t_el"), key_family("tele_phone")) == (None, None, "phone")


_separators = st.text(alphabet=st.sampled_from(list(" _-.:/\\\"'é#")), max_size=4)


@given(
    st.sampled_from(sorted(KEY_WORDS)),
    st.text(alphabet=st.sampled_from(list("aZ0_ -")), max_size=4),
    st.lists(_separators, min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=40, max_size=40),
    st.sampled_from([(",", ":"), (", ", ": "), (",", " : ")]),
)
@hsettings(max_examples=500, deadline=None)
def test_both_screens_find_every_key_the_rule_reads_however_it_is_spelled(spelling, prefix, seps, upper, spacing):
    """A spelling's words in any case, run together or apart with any separators, after any prefix and before
    any separators: whenever the rule reads the key as an identifier's, both screens find it."""
    words = spelling.split()
    key = prefix + "".join(w + seps[i % 3][: 0 if i == len(words) - 1 else None] for i, w in enumerate(words))
    key = "".join(c.upper() if up else c for c, up in zip(key, upper + [False] * len(key))) + seps[2]
    import json

    text = json.dumps({key: "12345"}, separators=spacing, ensure_ascii=False)
    if key_family(key) is not None:
        assert screen_hits(text), text
        assert _engine_screen(_DB.execute("SELECT ?::JSON::VARCHAR", [text]).fetchall()[0][0]), text
        assert _engine_screen(text), text


@given(st.dictionaries(_keys, _json, max_size=4))
@hsettings(max_examples=600, deadline=None)
def test_the_screen_matches_every_text_the_rule_would_change(section):
    python_text = orjson.dumps(section).decode()
    engine_text = _DB.execute("SELECT ?::JSON::VARCHAR", [python_text]).fetchall()[0][0]
    changed = RULE.json_text(engine_text) != engine_text
    assert RULE.json_text(python_text) != python_text or not changed
    if changed:
        assert screen_hits(engine_text) and screen_hits(python_text), engine_text
        assert _engine_screen(engine_text), engine_text


@given(
    st.dictionaries(_keys, _json, max_size=4),
    st.sampled_from([(",", ":"), (", ", ": "), (",", " : ")]),
    st.booleans(),
    st.sampled_from([None, 2]),
)
@example({"entry_method": "palm", "entry_token": "palm-zoe-1"}, (",", ":"), False, None)
@example({"entry_token": "tok_1234"}, (", ", ": "), True, 2)
@example({"payment_token": "em_" + "1" * 32}, (",", ":"), False, None)
@hsettings(max_examples=400, deadline=None)
def test_a_clean_screen_of_a_clients_text_means_the_rule_changes_nothing(section, separators, ascii_only, indent):
    """The import screens the text of a call or batch as the client sent it (any spacing, escapes or none)
    and skips the rule where the screen finds nothing."""
    import copy
    import json

    call = {
        "type": "track",
        "event": "Store Entered",
        "userId": "u",
        "properties": section,
        "traits": section,
        "context": section,
    }
    text = json.dumps({"batch": [call]}, separators=separators, ensure_ascii=ascii_only, indent=indent)
    pseudonymised = copy.deepcopy(call)
    problems = pseudonymise_payload(pseudonymised, P, PayloadCipher(SECRET))
    if pseudonymised != call or problems:
        assert screen_hits(text), text


def test_the_simulated_retailer_keeps_its_non_personal_strings(small_world):
    """Nothing but identifiers changes in the simulator's events: product ids, order ids, names of pages,
    categories and timestamps all pass through as they were."""
    out, manifest = small_world
    changed, seen = [], 0
    for source in (Path(p) for p in manifest["sources"] if p.endswith(".jsonl")):
        for line in source.read_bytes().splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(event, dict):
                continue
            for section in ("properties", "context"):
                value = event.get(section)
                if isinstance(value, dict):
                    seen += 1
                    before = orjson.dumps(value)
                    if orjson.dumps(RULE.walk(orjson.loads(before))) != before:
                        changed.append(before)
    assert seen > 5_000
    assert [
        c
        for c in changed
        if not any(
            k in c
            for k in (b'"loyalty_card"', b'"payment_token"', b'"email"', b'"phone"', b'"entry_token"', b'"app_code"')
        )
    ] == []
