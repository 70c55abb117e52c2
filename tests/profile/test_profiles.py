"""The unified profile, on a hand-made log whose every figure is known."""

from omnithread.identity import resolve_identities
from omnithread.profile import build_profiles, get_profile
from omnithread.workspace import Workspace
from tests.conftest import write_lines


def event(n, day, **fields):
    return {"messageId": f"m{n}", "timestamp": f"2026-09-{day:02d}T10:00:00Z", **fields}


LOG = [
    event(
        1,
        1,
        type="identify",
        userId="alice",
        anonymousId="d1",
        traits={"plan": "member"},
        context={"channel": "web", "consent": {"categoryPreferences": {"personalisation": False}}},
    ),
    event(
        2,
        1,
        type="track",
        event="Product Viewed",
        userId="alice",
        anonymousId="d1",
        context={"channel": "web"},
        properties={"product_id": "P1", "category": "dairy"},
    ),
    event(
        3,
        1,
        type="track",
        event="Product Viewed",
        userId="alice",
        anonymousId="d1",
        context={"channel": "web"},
        properties={"product_id": "P2", "category": "books"},
    ),
    event(
        4,
        2,
        type="track",
        event="Order Completed",
        userId="alice",
        anonymousId="d1",
        context={"channel": "web"},
        properties={
            "order_id": "W1",
            "payment_token": "tok_alice",
            "products": [
                {"product_id": "P1", "quantity": 2, "price": 1.5},
                {"product_id": "P2", "quantity": 1, "price": 4.0},
            ],
        },
    ),
    event(
        5,
        5,
        type="track",
        event="Order Completed",
        anonymousId="till:S1:T1",
        context={"channel": "store", "store_id": "S1"},
        properties={
            "order_id": "T1",
            "payment_token": "tok_alice",
            "products": [{"product_id": "P1", "quantity": 1, "price": 1.5}],
        },
    ),
    event(
        6,
        6,
        type="track",
        event="Consent Updated",
        userId="alice",
        anonymousId="d1",
        context={"channel": "app"},
        properties={"purposes": {"personalisation": True, "biometric": False}},
    ),
    event(
        7,
        3,
        type="track",
        event="Order Completed",
        userId="bob",
        anonymousId="d2",
        context={"channel": "web"},
        properties={"order_id": "W2", "products": [{"product_id": "P2", "quantity": 1, "price": 4.0}]},
    ),
    event(8, 4, type="page", anonymousId="d3", context={"channel": "web"}),
]


def test_profiles_join_every_channel_through_the_identity_map(tmp_path, settings):
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths([write_lines(tmp_path / "log.jsonl", LOG)])
        resolve_identities(ws.engine, ws.pseudonymiser)
        assert build_profiles(ws.engine) == 3
        alice = ws.engine.scalar("SELECT person_id FROM identity_map WHERE identifier = 'account:alice'")
        bob = ws.engine.scalar("SELECT person_id FROM identity_map WHERE identifier = 'account:bob'")
        profile = get_profile(ws.engine, alice)
        assert profile["channels"] == ["app", "store", "web"]
        assert (profile["orders"], profile["items"], profile["revenue"]) == (2, 4, 8.5)
        assert profile["by_channel"] == {
            "store": {"orders": 1, "items": 1, "revenue": 1.5},
            "web": {"orders": 1, "items": 3, "revenue": 7.0},
        }
        assert profile["revenue_by_store"] == {"S1": 1.5}
        assert profile["favourite_categories"] == ["dairy", "books"]
        assert profile["membership"] == "member"
        assert profile["consent_personalisation"] is True and profile["consent_biometric"] is False
        assert profile["consent_analytics"] is None
        assert (profile["recency_days"], profile["r_score"], profile["f_score"], profile["m_score"]) == (1, 5, 2, 2)
        assert get_profile(ws.engine, bob)["r_score"] == 4 and get_profile(ws.engine, bob)["f_score"] == 1
        anonymous = ws.engine.scalar("SELECT person_id FROM identity_map WHERE identifier = 'device:d3'")
        nobody = get_profile(ws.engine, anonymous)
        assert nobody["orders"] == 0 and nobody["r_score"] is None and nobody["channels"] == ["web"]
        assert get_profile(ws.engine, "p_missing") is None
