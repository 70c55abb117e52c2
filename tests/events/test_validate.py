from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from omnithread.errors import Problem
from omnithread.events import EVENT_SCHEMAS, TimePolicy, validate_event

NOW = datetime(2026, 10, 1, 12, tzinfo=timezone.utc)


def codes(payload, **kwargs):
    return [(p.code, p.field) for p in validate_event(payload, NOW, **kwargs)[1]]


def track(event, properties=None, **extra):
    return {"type": "track", "event": event, "userId": "u1", "properties": properties or {}, **extra}


def test_a_custom_event_of_the_senders_own_is_accepted_as_it_is():
    checked, problems = validate_event(track("Wishlist Shared", {"anything": [1, {"goes": True}]}), NOW)
    assert problems == [] and checked.name == "Wishlist Shared" and checked.schema_version is None


def test_known_events_carry_their_schema_version():
    checked, _ = validate_event(track("Product Viewed", {"product_id": "p1"}), NOW)
    assert checked.schema_version == EVENT_SCHEMAS["Product Viewed"].version == 2


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"type": "track", "event": "x"}, [("missing_identity", "userId")]),
        ({"type": "trak", "userId": "u"}, [("unknown_call", "type")]),
        ({"userId": "u"}, [("missing_field", "type")]),
        ({"type": "track", "userId": "u"}, [("invalid_event_name", "event")]),
        ({"type": "track", "event": "x", "userId": ["u"]}, [("invalid_type", "userId")]),
        ({"type": "track", "event": "x", "userId": "u", "properties": "p"}, [("invalid_type", "properties")]),
        ({"type": "alias", "userId": "u"}, [("missing_field", "previousId")]),
        ({"type": "group", "userId": "u"}, [("missing_field", "groupId")]),
        ({"type": "page", "userId": "u", "context": {"channel": "fax"}}, [("invalid_choice", "context.channel")]),
        ({"type": "page", "userId": "u", "context": {"channel": "store"}}, [("missing_field", "context.store_id")]),
        ({"type": "page", "userId": "u", "timestamp": "yesterday"}, [("invalid_timestamp", "timestamp")]),
        ({"type": "page", "userId": "u", "timestamp": "2031-01-01T00:00:00Z"}, [("future_timestamp", "timestamp")]),
        (
            {"type": "page", "userId": "u", "timestamp": "1970-01-02T00:00:00Z"},
            [("implausible_timestamp", "timestamp")],
        ),
        (
            track("Product Viewed", {"price": "9.99"}),
            [("missing_field", "properties.product_id"), ("invalid_type", "properties.price")],
        ),
        (track("Product Added", {"product_id": "p", "quantity": 0}), [("out_of_range", "properties.quantity")]),
        (
            track("Order Completed", {"order_id": "o", "products": [{"product_id": "p", "price": -1}, 5]}),
            [("out_of_range", "properties.products[0].price"), ("invalid_type", "properties.products[1]")],
        ),
        (
            track("Store Entered", {"store_id": "S1", "entry_method": "face", "entry_token": "t123"}),
            [("invalid_choice", "properties.entry_method")],
        ),
        (
            track("Store Entered", {"store_id": "S1", "entry_method": "palm"}),
            [("missing_field", "properties.entry_token")],
        ),
        (
            track("Consent Updated", {"purposes": {"analytics": "yes"}}),
            [("invalid_type", "properties.purposes.analytics")],
        ),
    ],
)
def test_every_problem_names_the_field(payload, expected):
    assert codes(payload) == expected


def test_messages_carry_the_value():
    _, problems = validate_event(track("Product Viewed", {"product_id": "p", "price": "9,99"}), NOW)
    assert "'9,99'" in problems[0].message and "properties.price" in problems[0].message


def test_all_problems_are_reported_at_once():
    payload = {"type": "track", "event": "Product Added", "properties": {"quantity": -2}, "timestamp": "nope"}
    assert {c for c, _ in codes(payload)} == {"missing_identity", "missing_field", "out_of_range", "invalid_timestamp"}


def test_clock_skew_is_corrected_as_segment_does():
    # The device clock runs two hours fast: it says the event happened at 12:00 and was sent at 12:00:05,
    # but the server received it at 10:00:06. The event happened at 10:00:01.
    payload = {
        "type": "page",
        "userId": "u",
        "originalTimestamp": "2026-09-01T12:00:00Z",
        "sentAt": "2026-09-01T12:00:05Z",
        "receivedAt": "2026-09-01T10:00:06Z",
    }
    checked, problems = validate_event(payload, NOW)
    assert problems == []
    assert checked.times.event_at == datetime(2026, 9, 1, 10, 0, 1, tzinfo=timezone.utc)
    assert checked.times.original_at == datetime(2026, 9, 1, 12, tzinfo=timezone.utc)
    assert checked.times.received_at == datetime(2026, 9, 1, 10, 0, 6, tzinfo=timezone.utc)


def test_a_live_receive_time_is_used_when_the_payload_has_none():
    payload = {
        "type": "page",
        "userId": "u",
        "originalTimestamp": "2026-10-01T13:00:00Z",
        "sentAt": "2026-10-01T13:00:02Z",
    }
    checked, _ = validate_event(payload, NOW, received_at=NOW)
    assert checked.times.event_at == NOW - timedelta(seconds=2)


def test_late_events_are_accepted():
    checked, problems = validate_event({"type": "page", "userId": "u", "timestamp": "2025-01-01T00:00:00Z"}, NOW)
    assert problems == [] and checked.times.event_at.year == 2025


def test_the_future_limit_is_configurable():
    payload = {"type": "page", "userId": "u", "timestamp": "2026-10-05T00:00:00Z"}
    assert codes(payload) == [("future_timestamp", "timestamp")]
    assert codes(payload, policy=TimePolicy(max_ahead=timedelta(days=7))) == []


def test_numeric_ids_are_read_as_strings_and_channel_aliases_mapped():
    checked, problems = validate_event({"type": "page", "userId": 42, "context": {"channel": "browser"}}, NOW)
    assert problems == [] and checked.user_id == "42" and checked.channel == "web"


def test_group_and_previous_ids_are_checked_on_every_call_that_carries_them():
    # found by the API fuzzing: a page with a numeric groupId reached the log as a number and failed the write
    payload = {"type": "page", "userId": "u", "groupId": -9563753349, "previousId": 7}
    checked, problems = validate_event(payload, NOW)
    assert problems == [] and (payload["groupId"], payload["previousId"]) == ("-9563753349", "7")
    assert codes({"type": "page", "userId": "u", "groupId": {"a": 1}}) == [("invalid_type", "groupId")]
    assert codes({"type": "group", "userId": "u"}) == [("missing_field", "groupId")]
    assert codes({"type": "group", "userId": "u", "groupId": ["g"]}) == [("invalid_type", "groupId")]


def test_store_events_default_to_the_store_channel():
    checked, _ = validate_event(track("Product Picked", {"store_id": "S4", "product_id": "p"}), NOW)
    assert checked.channel == "store" and checked.store_id == "S4"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify", "page", "screen", "alias", "group", "x"]) | json_values,
        "event": st.sampled_from(sorted(EVENT_SCHEMAS)) | json_values,
        "userId": st.text(max_size=5) | json_values,
        "anonymousId": json_values,
        "messageId": json_values,
        "properties": st.dictionaries(
            st.sampled_from(
                [
                    "product_id",
                    "price",
                    "quantity",
                    "products",
                    "store_id",
                    "entry_method",
                    "entry_token",
                    "purposes",
                    "order_id",
                ]
            ),
            json_values,
            max_size=4,
        )
        | json_values,
        "context": st.dictionaries(st.sampled_from(["channel", "store_id", "consent"]), json_values) | json_values,
        "traits": json_values,
        "timestamp": st.sampled_from(["2026-01-01T00:00:00Z", "x"]) | json_values,
        "sentAt": json_values,
        "previousId": json_values,
        "groupId": json_values,
    },
)


@given(payloads)
@hsettings(max_examples=400)
def test_validation_never_crashes_and_either_accepts_or_explains(payload):
    checked, problems = validate_event(payload, NOW)
    assert (checked is None) == bool(problems)
    assert all(isinstance(p, Problem) and p.message for p in problems)


def test_a_clock_off_by_millennia_is_an_implausible_timestamp_not_a_crash():
    from datetime import datetime, timezone

    from omnithread.events import validate_event

    now = datetime(2026, 10, 1, tzinfo=timezone.utc)
    payload = {
        "type": "screen",
        "name": "x",
        "anonymousId": "a",
        "messageId": "m",
        "originalTimestamp": "0366-07-06T16:54:16Z",
        "sentAt": "4938-07-24T11:23:32Z",
    }
    checked, problems = validate_event(payload, now, received_at=now)
    assert checked is None and [p.code for p in problems] == ["implausible_timestamp"]
    assert problems[0].field == "originalTimestamp"
