"""Store analytics, journeys, cohorts, refunds and RFM segments on a hand-made log whose every figure is known.

Alice browses P1 on the web, buys online, then in the checkout-free store S9 (her payment token joins the
two) picks P1 and P3, puts P3 back and leaves with P1; four days later she buys P3 online, and refunds it.
A stranger visits S9, picks two P2 and leaves without buying. In October a loyalty card nobody linked buys
at the till store S1.
"""

from __future__ import annotations

import pytest

from omnithread.analytics import baskets, cohorts, journeys, stores


def _at(day: str, second: int = 0) -> str:
    return f"2026-{day}T10:00:{second:02d}Z"


def _store(n: int, visit: str, event: str, day: str, second: int, **props) -> dict:
    return {
        "type": "track",
        "event": event,
        "messageId": f"s{n}",
        "anonymousId": f"visit-{visit}",
        "timestamp": _at(day, second),
        "context": {"channel": "store", "store_id": "S9"},
        "properties": {"store_id": "S9", **props},
    }


def _web(n: int, event: str, day: str, **props) -> dict:
    return {
        "type": "track",
        "event": event,
        "messageId": f"w{n}",
        "userId": "alice",
        "anonymousId": "d1",
        "timestamp": _at(day),
        "context": {"channel": "web"},
        "properties": props,
    }


LOG = [
    _web(1, "Product Viewed", "09-01", product_id="P1"),
    _web(
        2,
        "Order Completed",
        "09-02",
        order_id="W1",
        total=7.0,
        payment_token="tok_alice",
        products=[{"product_id": "P1", "quantity": 2, "price": 1.5}, {"product_id": "P2", "quantity": 1, "price": 4.0}],
    ),
    _store(1, "V1", "Store Entered", "09-05", 0, visit_id="V1", entry_method="payment_card", entry_token="tok_alice"),
    _store(2, "V1", "Product Picked", "09-05", 10, product_id="P1", quantity=1, plate_id="pl-1"),
    _store(3, "V1", "Product Picked", "09-05", 20, product_id="P3", quantity=1, plate_id="pl-3"),
    _store(4, "V1", "Product Returned To Shelf", "09-05", 30, product_id="P3", quantity=1, plate_id="pl-3"),
    _store(5, "V1", "Store Exited", "09-05", 40, visit_id="V1", dwell_seconds=600.0),
    _store(
        6,
        "V1",
        "Order Completed",
        "09-05",
        41,
        order_id="R-V1",
        total=1.5,
        payment_token="tok_alice",
        products=[{"product_id": "P1", "quantity": 1, "price": 1.5}],
    ),
    _store(7, "V2", "Store Entered", "09-06", 0, visit_id="V2", entry_method="none"),
    _store(8, "V2", "Product Picked", "09-06", 10, product_id="P2", quantity=2, plate_id="pl-2"),
    _store(9, "V2", "Store Exited", "09-06", 20, visit_id="V2", dwell_seconds=300.0),
    _web(3, "Order Completed", "09-09", order_id="W2", total=10.0, products=[{"product_id": "P3", "price": 10.0}]),
    _web(4, "Order Refunded", "09-10", order_id="W2", total=10.0),
    {
        "type": "track",
        "event": "Order Completed",
        "messageId": "t1",
        "anonymousId": "till-session-1",
        "timestamp": _at("10-03"),
        "context": {"channel": "store", "store_id": "S1"},
        "properties": {
            "order_id": "T1",
            "loyalty_card": "CARD000001",
            "total": 20.0,
            "products": [{"product_id": "P4", "quantity": 2, "price": 10.0}],
        },
    },
]


@pytest.fixture
def resolved(handmade):
    return handmade


def test_store_performance_per_store(resolved):
    rows = {r["store_id"]: r for r in stores.store_performance(resolved.engine)}
    assert rows["S9"] == {
        "store_id": "S9",
        "visits": 2,
        "visitors": 2,
        "mean_dwell_minutes": 7.5,
        "median_dwell_minutes": 7.5,
        "orders": 1,
        "revenue": 1.5,
        "conversion": 0.5,
        "items_per_order": 1.0,
        "revenue_per_order": 1.5,
        "door_sensors": True,
    }
    # a till store has no door sensors: footfall, dwell and conversion unknown, never guessed
    assert rows["S1"]["visits"] is None and rows["S1"]["conversion"] is None and not rows["S1"]["door_sensors"]
    assert (rows["S1"]["orders"], rows["S1"]["revenue"], rows["S1"]["items_per_order"]) == (1, 20.0, 2.0)


def test_hourly_traffic(resolved):
    hours = stores.hourly_traffic(resolved.engine)
    assert hours == [
        {"store_id": "S1", "hour": 10, "entries": 0, "orders": 1},
        {"store_id": "S9", "hour": 10, "entries": 2, "orders": 1},
    ]
    assert stores.hourly_traffic(resolved.engine, store_id="S1") == hours[:1]


def test_pick_to_buy_and_put_back_per_product_and_per_plate(resolved):
    rows = {r["product"]: r for r in stores.shelf_performance(resolved.engine)}
    assert rows["P1"] | {} == {
        "store_id": "S9",
        "product": "P1",
        "units_picked": 1,
        "units_put_back": 0,
        "put_back_rate": 0.0,
        "visits_picked": 1,
        "visits_bought": 1,
        "pick_to_buy": 1.0,
    }
    assert (rows["P3"]["put_back_rate"], rows["P3"]["pick_to_buy"]) == (1.0, 0.0)
    assert (rows["P2"]["units_picked"], rows["P2"]["pick_to_buy"]) == (2, 0.0)
    plates = {r["plate"]: r for r in stores.shelf_performance(resolved.engine, by="plate")}
    assert set(plates) == {"pl-1", "pl-2", "pl-3"} and plates["pl-3"]["units_put_back"] == 1


def test_journeys_with_and_without_resolution(resolved):
    found = journeys.journeys(resolved.engine, days=14)
    joined, alone = found["with_resolution"], found["without_resolution"]
    # P1 viewed online on 1 Sept, bought in S9 on 5 Sept, by the person the payment token joined
    assert joined["webrooming"] == {"orders": 1, "lines": 1, "revenue": 1.5}
    # P3 picked in S9 on 5 Sept, bought online on 9 Sept
    assert joined["showrooming"] == {"orders": 1, "lines": 1, "revenue": 10.0}
    assert joined["store_touched_by_online"] == {
        "store_orders": 2,
        "store_revenue": 21.5,
        "touched_orders": 1,
        "touched_revenue": 1.5,
        "touched_share": round(1.5 / 21.5, 4),
    }
    # without the identity map, the store's visit and the web account are strangers
    assert alone["webrooming"]["orders"] == alone["showrooming"]["orders"] == 0
    assert alone["store_touched_by_online"]["touched_revenue"] == 0
    assert found["added"] == {
        "webrooming_revenue": 1.5,
        "showrooming_revenue": 10.0,
        "store_revenue_touched_by_online": 1.5,
    }
    # a window too short for the 4-day showroom journey leaves it out
    assert journeys.journeys(resolved.engine, days=3)["with_resolution"]["showrooming"]["orders"] == 0


def test_cohorts_and_revenue_net_of_refunds(resolved):
    rows = cohorts.cohorts(resolved.engine)
    assert [(str(r["cohort"]), r["first_channel"], r["persons"], r["months_since"], r["revenue"]) for r in rows] == [
        ("2026-09-01", "web", 1, 0, 18.5),  # Alice: 7.0 + 1.5 + 10.0, all in September
        ("2026-10-01", "store", 1, 0, 20.0),
    ]
    money = {(str(r["month"]), r["channel"]): r for r in cohorts.revenue_by_month(resolved.engine)}
    assert money[("2026-09-01", "web")] | {} == {
        "month": money[("2026-09-01", "web")]["month"],
        "channel": "web",
        "orders": 2,
        "gross_revenue": 17.0,
        "refunds": 1,
        "refunded": 10.0,
        "net_revenue": 7.0,
    }
    assert money[("2026-09-01", "store")]["net_revenue"] == 1.5
    assert money[("2026-10-01", "store")]["net_revenue"] == 20.0


def test_rfm_segments_name_every_cell_once():
    cells = [(r, f) for r in range(1, 6) for f in range(1, 6)]
    named = [cohorts.segment_of(r, f) for r, f in cells]
    assert None not in named and len(set(named)) == 10
    assert cohorts.segment_of(5, 5) == "champions" and cohorts.segment_of(1, 1) == "hibernating"
    assert cohorts.segment_of(1, 5) == "cannot lose them" and cohorts.segment_of(5, 1) == "new"
    assert cohorts.segment_of(None, None) is None


def test_rfm_segments_of_the_profiles(resolved):
    rows = cohorts.rfm_segments(resolved.engine)
    assert sum(r["persons"] for r in rows) == 2  # Alice and the card's holder
    assert sum(r["revenue"] for r in rows) == pytest.approx(7.0 + 1.5 + 10.0 + 20.0)


def test_association_rules_support_confidence_and_lift(resolved):
    """Four orders: W1 {P1, P2}, the store's {P1}, W2 {P3}, the till's {P4}."""
    rules = {(r["antecedent"], r["consequent"]): r for r in baskets.association_rules(resolved.engine, min_orders=1)}
    assert set(rules) == {("P1", "P2"), ("P2", "P1")}
    assert (rules[("P1", "P2")]["support"], rules[("P1", "P2")]["confidence"], rules[("P1", "P2")]["lift"]) == (
        0.25,
        0.5,
        2.0,
    )
    assert (rules[("P2", "P1")]["confidence"], rules[("P2", "P1")]["lift"]) == (1.0, 2.0)
    by_channel = baskets.association_rules(resolved.engine, by="channel", min_orders=1)
    assert {r["group_key"] for r in by_channel} == {"web"}  # the store's orders hold one product each
    assert baskets.association_rules(resolved.engine, min_orders=2) == []
    with pytest.raises(Exception, match="by"):
        baskets.association_rules(resolved.engine, by="planet")
