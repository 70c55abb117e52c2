"""The sensing engine on the hard cases of a checkout-free store, each pinned to an exact receipt."""

from __future__ import annotations

import math

import pytest

from omnithread.sensing import SensingConfig, SensingEngine, generate_layout
from omnithread.sensing.evaluate import evaluate_receipts
from omnithread.sim.sensors import Action, Scene, SensorNoise, ShopperPlan, render_scene, scenario

START = 1_790_000_000.0


def lab():
    """Two gondolas, two shelves, four plates a shelf, two facings a plate. P00 and P01 (plate 0) weigh
    the same; every other product has its own weight."""
    ids = [f"P{i:02d}" for i in range(32)]
    weights = [150.0, 150.0] + [round(95 + 41.3 * i, 1) for i in range(2, 32)]
    layout, _ = generate_layout(
        "LAB",
        ids,
        weights,
        [1.0 + i / 10 for i in range(32)],
        gondolas=2,
        shelves=2,
        plates_per_shelf=4,
        facings_per_plate=2,
        seed=1,
        stock=10,
    )
    return layout


LAYOUT = lab()


def at(product: str):
    plate, x = LAYOUT.home[product][0]
    return plate, x


def pick(product: str, units: int = 1, **kw) -> Action:
    plate, x = at(product)
    return Action("pick", plate, x, product, units, **kw)


def put_back(product: str, on: str | None = None, shift: float = 0.0) -> Action:
    plate, x = at(on or product)
    return Action("return", plate, x + shift, product, 1)


def shopper(name: str, t: float, actions, **kw) -> ShopperPlan:
    kw.setdefault("entry_method", "app_code")
    kw.setdefault("entry_token", f"app-{name}")
    return ShopperPlan(name, START + t, actions, visit_id=name, **kw)


def sense(plans, seed: int = 3, noise: SensorNoise = SensorNoise(), **delivery):
    signals = render_scene(Scene(LAYOUT, plans, START, seed=seed), noise)
    engine = SensingEngine(LAYOUT)
    signals.feed(engine, **delivery)
    receipts = {r.visit_id: r for r in engine.close()}
    return signals, engine, receipts


def baskets(receipts) -> dict:
    return {v: r.basket for v, r in receipts.items()}


def test_simple_trip_is_one_exact_receipt_with_its_events():
    signals, engine, receipts = sense([shopper("a", 0, [pick("P05"), pick("P12", 2), pick("P20"), put_back("P20")])])
    assert baskets(receipts) == {"a": {"P05": 1, "P12": 2}}
    r = receipts["a"]
    assert not r.review and engine.problems == []
    names = [e["event"] for e in r.events]
    assert names == [
        "Store Entered",
        "Product Picked",
        "Product Picked",
        "Product Picked",
        "Product Returned To Shelf",
        "Store Exited",
        "Order Completed",
    ]
    entered, order = r.events[0], r.events[-1]
    assert entered["properties"]["entry_method"] == "app_code" and entered["properties"]["entry_token"] == "app-a"
    assert order["context"] == {"channel": "store", "store_id": "LAB"}
    assert {p["product_id"]: p["quantity"] for p in order["properties"]["products"]} == {"P05": 1, "P12": 2}
    assert all(0.8 <= p["confidence"] <= 1 for p in order["properties"]["products"])
    dwell = r.events[-2]["properties"]["aisle_dwell"]
    assert set(dwell) <= {"aisle-1", "aisle-2"} and sum(dwell.values()) > 5


def test_events_pass_the_event_schema():
    from datetime import datetime, timezone

    from omnithread.events import validate_event

    _, _, receipts = sense([shopper("a", 0, [pick("P05"), pick("P09"), put_back("P09")])])
    now = datetime.fromtimestamp(START + 3600, timezone.utc)
    for event in receipts["a"].events:
        checked, problems = validate_event(event, now)
        assert problems == [] and checked is not None, (event["event"], problems)


def test_two_shoppers_at_one_shelf_at_once():
    # adjacent plates of one shelf, both hands in at the same moment
    plans = [shopper("a", 0, [pick("P03")]), shopper("b", 0.4, [pick("P04")])]
    assert at("P03")[0] + 1 == at("P04")[0]
    _, _, receipts = sense(plans)
    assert baskets(receipts) == {"a": {"P03": 1}, "b": {"P04": 1}}


def test_crossing_hands():
    # a stands in front of b's product and reaches across for its own, and b the other way round
    (_, xa), (_, xb) = at("P03"), at("P04")
    plans = [shopper("a", 0, [pick("P03", stand_x=xb)]), shopper("b", 0.4, [pick("P04", stand_x=xa)])]
    _, _, receipts = sense(plans)
    assert baskets(receipts) == {"a": {"P03": 1}, "b": {"P04": 1}}


def test_item_put_back_in_the_wrong_place_is_picked_later_by_someone_else():
    plans = [
        shopper("a", 0, [pick("P07"), put_back("P07", on="P22", shift=0.08), pick("P10")]),
        shopper("b", 40, [Action("pick", at("P22")[0], at("P22")[1] + 0.08, "P07", 1), pick("P22")]),
    ]
    _, _, receipts = sense(plans)
    assert baskets(receipts) == {"a": {"P10": 1}, "b": {"P07": 1, "P22": 1}}
    returned = [e for e in receipts["a"].events if e["event"] == "Product Returned To Shelf"]
    assert returned[0]["properties"]["misplaced"] is True
    assert returned[0]["properties"]["plate_id"] == LAYOUT.plate_ids[at("P22")[0]]


def test_products_of_the_same_weight_told_apart_by_the_hand():
    assert LAYOUT.unit_weight["P00"] == LAYOUT.unit_weight["P01"] and at("P00")[0] == at("P01")[0]
    plans = [shopper("a", 0, [pick("P01")]), shopper("b", 30, [pick("P00"), pick("P01")])]
    _, _, receipts = sense(plans)
    assert baskets(receipts) == {"a": {"P01": 1}, "b": {"P00": 1, "P01": 1}}


def test_several_units_at_once():
    _, _, receipts = sense([shopper("a", 0, [pick("P15", 3), pick("P16", 2)])])
    assert baskets(receipts) == {"a": {"P15": 3, "P16": 2}}
    picked = [e["properties"]["quantity"] for e in receipts["a"].events if e["event"] == "Product Picked"]
    assert picked == [3, 2]


def test_a_hand_resting_on_a_plate_takes_nothing():
    rest = Action("rest", at("P11")[0], at("P11")[1])
    signals, engine, receipts = sense([shopper("a", 0, [rest, pick("P02")])])
    assert baskets(receipts) == {"a": {"P02": 1}}
    assert not receipts["a"].review
    # the plate did see a hand's weight for seconds
    plate = at("P11")[0]
    assert signals.plate_samples[plate].max() - signals.plate_samples[plate].min() > 200


def test_item_handed_to_a_companion_lands_on_the_payers_receipt():
    plans = [
        shopper("p", 0, [pick("P09")]),
        shopper(
            "c", 1.0, [pick("P18"), Action("handoff", product="P18", to="p")], group_with="p", entry_method="group"
        ),
    ]
    _, _, receipts = sense(plans)
    assert baskets(receipts) == {"p": {"P09": 1, "P18": 1}}
    entered = receipts["p"].events[0]["properties"]
    assert entered["group_size"] == 2 and entered["entry_token"] == "app-p"


def test_out_of_order_and_duplicated_delivery_changes_nothing():
    plans = [shopper("a", 0, [pick("P05"), pick("P06")]), shopper("b", 5, [pick("P13", 2)])]
    _, _, clean = sense(plans)
    _, engine, jittery = sense(plans, shuffle=1.5, duplicates=0.5)
    assert baskets(jittery) == baskets(clean) == {"a": {"P05": 1, "P06": 1}, "b": {"P13": 2}}
    assert engine.duplicates > 1000 and engine.problems == []


def test_replaying_the_same_messages_changes_nothing():
    signals = render_scene(Scene(LAYOUT, [shopper("a", 0, [pick("P05")])], START, seed=3))
    messages = signals.messages()
    engine = SensingEngine(LAYOUT)
    half = len(messages) // 2
    engine.feed_many(messages[:half])
    engine.feed_many(messages[:half])  # a client retried everything it had sent
    engine.feed_many(messages[half:])
    engine.feed_many(messages)
    receipts = engine.close()
    assert [r.basket for r in receipts] == [{"P05": 1}]
    assert engine.duplicates >= len(messages)
    assert all(p.problem.code == "too_late" for p in engine.problems) is True


def test_bad_sensor_messages_are_refused_with_reasons_and_the_store_keeps_running():
    signals = render_scene(Scene(LAYOUT, [shopper("a", 0, [pick("P05"), pick("P14")])], START, seed=3))
    messages = signals.messages()
    middle = len(messages) // 2
    t = messages[middle]["t"]  # in the middle of the trip
    bad = [
        {"kind": "plate", "plate_id": "G99-S9-P99", "seq": 1, "t": t, "samples": [1.0] * 12},
        {"kind": "plate", "plate_id": LAYOUT.plate_ids[3], "seq": 10_000, "t": START + 2000, "samples": [-5000.0] * 12},
        {
            "kind": "plate",
            "plate_id": LAYOUT.plate_ids[3],
            "seq": 10_001,
            "t": START + 2000,
            "samples": [1.0] * 11 + [math.nan],
        },
        {"kind": "plate", "plate_id": LAYOUT.plate_ids[3], "seq": 10_002, "t": START + 2000, "samples": [1.0] * 5},
        {"kind": "thermometer", "t": t},
        {"kind": "gate", "event": "exit", "track_id": "T77", "t": t},
        {"kind": "gate", "event": "enter", "track_id": "T78", "t": t, "entry_method": "retina"},
        {"kind": "frame", "t": t, "seq": 99_999, "tracks": [{"track_id": "T1", "head": [0, 0]}]},
        {"kind": "plate", "t": "soon"},
        # a plate whose clock and sequence leapt half an hour ahead: the rest of the store must not turn late
        {"kind": "plate", "plate_id": LAYOUT.plate_ids[3], "seq": 10_003, "t": START + 2000, "samples": [1000.0] * 12},
    ]
    engine = SensingEngine(LAYOUT)
    engine.feed_many(messages[:middle] + bad + messages[middle:])
    receipts = engine.close()
    assert [r.basket for r in receipts] == [{"P05": 1, "P14": 1}]
    by_code = {}
    for p in engine.problems:
        by_code.setdefault(p.problem.code, []).append(p)
    assert set(by_code) >= {
        "unknown_plate",
        "absurd_weight",
        "invalid_samples",
        "unknown_kind",
        "exit_without_entry",
        "invalid_entry_method",
        "invalid_track",
        "invalid_time",
    }
    assert "too_late" not in by_code
    unknown = by_code["unknown_plate"][0]
    assert unknown.problem.field == "plate_id" and "G99-S9-P99" in unknown.problem.message
    assert unknown.message["plate_id"] == "G99-S9-P99"  # the message itself is kept
    absurd = by_code["absurd_weight"][0].problem
    assert absurd.field == "samples" and absurd.value == "-5000.0"
    assert "T77" in by_code["exit_without_entry"][0].problem.message


def test_a_plate_clock_that_jumps_is_noted_and_corrected_from_its_sequence():
    signals = render_scene(Scene(LAYOUT, [shopper("a", 0, [pick("P05")])], START, seed=3))
    plate = LAYOUT.plate_ids[at("P05")[0]]
    messages = []
    for m in signals.messages():
        if m["kind"] == "plate" and m["plate_id"] == plate and m["seq"] >= 50:
            m = dict(m, t=m["t"] + 30.0)  # its clock jumped half a minute ahead
        messages.append(m)
    engine = SensingEngine(LAYOUT)
    engine.feed_many(messages)
    receipts = engine.close()
    assert [r.basket for r in receipts] == [{"P05": 1}]
    jumps = [p for p in engine.problems if p.problem.code == "clock_jump"]
    assert jumps and all(p.message["plate_id"] == plate for p in jumps)


def test_a_gap_in_a_plates_messages_during_the_pick_still_finds_it():
    signals = render_scene(Scene(LAYOUT, [shopper("a", 0, [pick("P05"), pick("P21")])], START, seed=3))
    plate = LAYOUT.plate_ids[at("P05")[0]]
    real = next(e for e in signals.truth["events"] if e["product"] == "P05")
    messages = [
        m
        for m in signals.messages()
        if not (m["kind"] == "plate" and m["plate_id"] == plate and real["t_start"] - 1 <= m["t"] <= real["t_end"] + 1)
    ]
    engine = SensingEngine(LAYOUT)
    engine.feed_many(messages)
    assert [r.basket for r in engine.close()] == [{"P05": 1, "P21": 1}]


def test_a_shopper_who_never_exits_is_closed_at_the_end_and_sent_to_review():
    plans = [shopper("a", 0, [pick("P05")], never_exits=True), shopper("b", 2, [pick("P06")])]
    _, _, receipts = sense(plans)
    assert baskets(receipts) == {"a": {"P05": 1}, "b": {"P06": 1}}
    assert receipts["a"].review and any("no exit" in r for r in receipts["a"].reasons)
    assert not receipts["b"].review
    exited = [e for e in receipts["a"].events if e["event"] == "Store Exited"][0]
    assert "no exit" in exited["properties"]["exit_reason"]


def test_a_shopper_lost_for_long_is_closed_while_the_store_runs_on():
    config = SensingConfig(lost_after=20.0)
    plans = [shopper("a", 0, [pick("P05")], never_exits=True), shopper("b", 40, [pick("P06"), pick("P07")])]
    signals = render_scene(Scene(LAYOUT, plans, START, seed=3))
    a_left = next(t["exited_at"] for t in signals.truth["trips"] if t["session"] == "a")
    engine = SensingEngine(LAYOUT, config)
    closed_at = {}
    for m in signals.messages():
        engine.feed(m)
        for r in engine.poll():
            closed_at[r.visit_id] = (engine.processed_until, r)
    for r in engine.close():
        closed_at[r.visit_id] = (engine.processed_until, r)
    when, receipt = closed_at["a"]
    assert a_left + 19 <= when < closed_at["b"][0]  # 20 s after a was last seen, while b still shopped
    assert receipt.basket == {"P05": 1} and receipt.review
    assert any("no exit seen" in reason for reason in receipt.reasons)
    assert closed_at["b"][1].basket == {"P06": 1, "P07": 1}


def test_an_unexplained_weight_change_goes_to_review_not_a_guess():
    signals = render_scene(Scene(LAYOUT, [shopper("a", 0, [pick("P05"), pick("P21")])], START, seed=3))
    plate = at("P21")[0]
    real = next(e for e in signals.truth["events"] if e["product"] == "P21")
    k = int((real["t_end"] + 0.5 - signals.start) / 0.2)
    signals.plate_samples[plate, k:, :] -= 57.0  # something of no known weight also left the plate
    engine = SensingEngine(LAYOUT)
    signals.feed(engine)
    (receipt,) = engine.close()
    assert receipt.review
    assert receipt.basket.get("P05") == 1


@pytest.mark.parametrize("family", ["simple", "crowded", "misplaced", "same_weight", "handoff"])
def test_scenario_families_score_well_against_truth(family):
    signals = render_scene(scenario(family, 12, seed=5))
    engine = SensingEngine(signals.layout)
    signals.feed(engine)
    result = evaluate_receipts(signals.truth, engine.close(), engine.weight_events, signals.layout.plate_ids)
    assert result["trips"] >= 12 and result["receipts_missing"] == 0
    assert result["f1"] >= 0.95, result
    assert result["product_detection"] >= 0.95, result


def test_truth_is_kept_apart_from_the_signals():
    signals = render_scene(scenario("handoff", 3, seed=1))
    messages = signals.messages()
    kinds = {m["kind"] for m in messages}
    assert kinds == {"plate", "frame", "gate"}
    assert not any("product" in m or "cart" in m for m in messages)
    assert all(set(trip) >= {"visit_id", "cart", "members"} for trip in signals.truth["trips"])


def test_the_whole_store_falling_silent_and_coming_back_is_a_real_jump_in_time():
    plans = [shopper("a", 0, [pick("P05")]), shopper("b", 90, [pick("P06")])]
    signals = render_scene(Scene(LAYOUT, plans, START, seed=3))
    a_out = next(t["exited_at"] for t in signals.truth["trips"] if t["session"] == "a")
    silent = (a_out + 5, START + 85)  # every sensor off for about a minute, while the store was empty
    assert silent[1] - silent[0] > 30
    messages = [m for m in signals.messages() if not silent[0] <= m["t"] <= silent[1]]
    engine = SensingEngine(LAYOUT)
    engine.feed_many(messages)
    assert {r.visit_id: r.basket for r in engine.close()} == {"a": {"P05": 1}, "b": {"P06": 1}}
    assert not [p for p in engine.problems if p.problem.code == "too_late"]
