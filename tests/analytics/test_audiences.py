"""Audiences on the hand-made log of test_statistics (Alice: three orders across web and store, views;
the card holder: one till order on the log's last day; a stranger who visited and bought nothing):
membership by rule, changes as persons change, consent, erasure, and rules refused with the field, the
rule and what was expected."""

from __future__ import annotations

import pytest

from omnithread.analytics import audiences
from omnithread.errors import ConflictError, InvalidRequestError, NotFoundError
from omnithread.flows import erase, record_consent


@pytest.fixture
def ws(handmade):
    return handmade


def _alice(ws) -> str:
    return ws.engine.scalar("SELECT person_id FROM profiles WHERE orders = 3")


@pytest.mark.parametrize(
    "rule, who",
    [
        ("orders >= 2", {"alice"}),
        ('"store" in channels and "web" in channels', {"alice"}),
        ('"web" not in channels and orders > 0', {"card"}),
        ('events("Product Viewed", 60) >= 1', {"alice"}),
        ('events("Product Viewed", 7) >= 1', set()),
        ("spent(7) > 10", {"card"}),  # 20.0 at the till on the log's last day
        ("spent(60) >= 18.5", {"alice", "card"}),  # Alice: 7.0 + 1.5 + 10.0
        ("orders_in(7) == 1 or revenue > 100", {"card"}),
        ("not (orders >= 2)", {"card", "stranger"}),  # the visitor who bought nothing is a person too
        ('membership == "gold"', set()),
    ],
)
def test_members_by_rule(ws, rule, who):
    names = {
        _alice(ws): "alice",
        ws.engine.scalar("SELECT person_id FROM profiles WHERE revenue = 20"): "card",
        ws.engine.scalar("SELECT person_id FROM profiles WHERE orders = 0"): "stranger",
    }
    found = audiences.preview(ws.engine, rule)
    assert {names.get(p, p) for p in found["sample"]} == who and found["members"] == len(who)


def test_an_audience_follows_its_members_and_records_each_change(ws):
    alice = _alice(ws)
    made = audiences.create_audience(ws.engine, "repeat-buyers", "orders >= 2", "bought more than once")
    assert made["members"] == 1 and made["changes"] == {"joined": 1, "left": 0}
    assert audiences.list_audiences(ws.engine)[0] | {"updated_at": None} == {
        "name": "repeat-buyers",
        "rule": "orders >= 2",
        "description": "bought more than once",
        "updated_at": None,
        "members": 1,
    }
    with pytest.raises(ConflictError):
        audiences.create_audience(ws.engine, "repeat-buyers", "orders >= 1")
    # Alice refuses analytics: the profiles are rebuilt and she leaves every audience, recorded
    record_consent(ws, alice, {"analytics": False}, source="test")
    assert audiences.audience_members(ws.engine, "repeat-buyers")["members"] == 0
    changes = ws.engine.rows("SELECT person_id, change FROM audience_changes ORDER BY changed_at, change")
    assert changes == [{"person_id": alice, "change": "joined"}, {"person_id": alice, "change": "left"}]
    # a changed rule takes effect at once
    changed = audiences.create_audience(ws.engine, "repeat-buyers", "orders >= 1", replace=True)
    assert changed["members"] == 1 and changed["changes"] == {"joined": 1, "left": 0}  # the card holder


def test_an_erased_person_leaves_audiences_and_their_history(ws):
    alice = _alice(ws)
    audiences.create_audience(ws.engine, "web-and-store", '"store" in channels and "web" in channels')
    erase(ws, alice)
    assert ws.engine.scalar("SELECT count(*) FROM audience_members WHERE person_id = ?", [alice]) == 0
    assert ws.engine.scalar("SELECT count(*) FROM audience_changes WHERE person_id = ?", [alice]) == 0
    audiences.delete_audience(ws.engine, "web-and-store")
    with pytest.raises(NotFoundError):
        audiences.delete_audience(ws.engine, "web-and-store")


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("orders >", "parses"),
        ("ordres > 1", "a known trait, not 'ordres'"),
        ("clv > 100", "'clv' to have been computed"),  # lifetime value not scored in this data directory
        ("orders > 'many'", "the same kind on both sides"),
        ('membership > "gold"', "== or != for a text"),
        ('channels == "web"', "a list trait tested with 'in'"),
        ('events("Order Completed")', "a comparison"),
        ('events("Order Completed") > 1', "2 argument(s)"),
        ("events(7, 7) > 1", "a text here"),
        ("orders_in(0) > 1", "days from 1 to 3650"),
        ('__import__("os").system("x") == 1', "a function among"),
        ("orders + 1 > 2", "a number, a quoted text"),
        ("orders in ()", "at least one value"),
        ("", "an expression such as"),
    ],
)
def test_bad_rules_are_refused_with_what_was_expected(ws, rule, expected):
    with pytest.raises(InvalidRequestError) as caught:
        audiences.preview(ws.engine, rule)
    assert caught.value.field == "rule" and expected in str(caught.value)


def test_audience_names_are_checked(ws):
    with pytest.raises(InvalidRequestError, match="name"):
        audiences.create_audience(ws.engine, "Big Spenders!", "orders > 1")


def test_the_command_line_creates_lists_shows_and_refuses(ws, tmp_path):
    import json
    import subprocess
    import sys

    data = str(ws.settings.data_dir)
    ws.close()

    def cli(*words):
        return subprocess.run(
            [sys.executable, "-m", "omnithread.cli", "audience", *words, "--data-dir", data],
            capture_output=True,
            text=True,
            timeout=300,
        )

    made = cli("create", "repeat", "--rule", "orders >= 2", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["members"] == 1
    assert [a["name"] for a in json.loads(cli("list", "--json").stdout)] == ["repeat"]
    assert len(json.loads(cli("show", "repeat", "--json").stdout)["page"]) == 1
    bad = cli("preview", "ordres > 1")
    assert bad.returncode == 2 and "a known trait, not 'ordres'" in bad.stderr


@pytest.mark.parametrize(
    "rule, description",
    [
        ('membership == "jane.doe@example.org"', ""),
        ('membership == "+44 7700 900123"', ""),
        ("orders > 1", "ask jane.doe@example.org"),
    ],
)
def test_contact_details_in_a_rule_or_description_are_refused_and_not_repeated(ws, rule, description):
    with pytest.raises(InvalidRequestError) as caught:
        audiences.create_audience(ws.engine, "someone", rule, description)
    message = str(caught.value)
    assert "no email address or phone number" in message
    assert "jane.doe" not in message and "7700" not in message
    assert not ws.engine.has_table("audiences") or ws.engine.scalar("SELECT count(*) FROM audiences") == 0
