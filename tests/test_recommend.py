"""Recommendations: metric code against hand-computed examples, models, splits, serving and the ablation."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
import scipy.sparse as sp

from omnithread.errors import ConflictError, InvalidRequestError, NotFoundError
from omnithread.recommend import (
    ALS,
    DLAE,
    EASE,
    ItemKNN,
    Popularity,
    RP3Beta,
    Split,
    average_precision_at_k,
    evaluate_model,
    load_model,
    ndcg_at_k,
    random_split,
    recall_at_k,
    temporal_split,
)
from omnithread.recommend.interactions import SignalConfig, build_matrix
from omnithread.recommend.models import top_n


def test_metrics_match_hand_computed_values():
    ranked = [4, 2, 9, 7, 1]
    relevant = {2, 7, 8}
    # hits at ranks 2 and 4; DCG = 1/log2(3) + 1/log2(5); IDCG (3 relevant, k=5) = 1 + 1/log2(3) + 1/2
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert ndcg_at_k(ranked, relevant, 5) == pytest.approx(dcg / (1 + 1 / math.log2(3) + 0.5))
    assert recall_at_k(ranked, relevant, 5) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, relevant, 1) == 0.0
    # AP@5: precision at the hits (1/2 at rank 2, 2/4 at rank 4) over min(3, 5)
    assert average_precision_at_k(ranked, relevant, 5) == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert ndcg_at_k([8, 2, 7], relevant, 3) == pytest.approx(1.0)
    assert ndcg_at_k(ranked, set(), 5) == recall_at_k(ranked, set(), 5) == 0.0


def test_top_n_breaks_ties_by_index_and_leaves_out_excluded():
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.7])
    assert top_n(scores, 3).tolist() == [1, 2, 4]
    assert top_n(scores, 3, [1]).tolist() == [2, 4, 0]
    assert top_n(scores, 10, [0, 1, 2, 3, 4]).tolist() == []


def test_evaluate_model_scores_an_oracle_perfectly_and_excludes_training_items():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    test = {0: {3}, 1: {2}}

    class Oracle:
        def scores(self, history):
            s = np.zeros((history.shape[0], 4))
            for r in range(history.shape[0]):
                s[r, history[r].indices] = 10.0  # each user's training items score highest: they must be left out
                s[r, list(test[r])] = 5.0
            return s

    result = evaluate_model(Oracle(), Split(train, test), ks=(1, 2))
    assert result["ndcg@1"] == result["recall@1"] == result["map@1"] == 1.0
    assert result["users"] == 2 and result["coverage@1"] == 0.5


def test_temporal_split_holds_out_each_users_latest_fifth():
    users = np.array([0] * 10 + [1] * 5 + [2])
    items = np.array(list(range(10)) + list(range(5)) + [0])
    times = np.array(list(range(10)) + [50, 40, 30, 20, 10] + [0])
    split = temporal_split(users, items, times, (3, 10))
    assert split.test == {0: {8, 9}, 1: {0}}  # user 1 saw item 0 last (t=50); user 2 has one interaction
    assert split.train[0].nnz == 8 and split.train[2].nnz == 1


def test_temporal_split_uses_time_not_order():
    users = np.array([1] * 5)
    items = np.arange(5)
    times = np.array([50, 40, 30, 20, 10])
    split = temporal_split(users, items, times, (2, 5))
    assert split.test == {1: {0}}


def test_random_split_is_fixed_by_its_seed():
    users = np.repeat(np.arange(20), 10)
    items = np.tile(np.arange(10), 20)
    a, b, c = (random_split(users, items, (20, 10), seed=s) for s in (1, 1, 2))
    assert a.test == b.test and a.test != c.test
    assert all(len(v) == 2 for v in a.test.values())


def _toy():
    rng = np.random.default_rng(0)
    X = (rng.random((60, 25)) < 0.2).astype(np.float32)
    X[:, 0] = 1  # a blockbuster
    return sp.csr_matrix(X)


def test_ease_is_its_closed_form():
    X = _toy()
    model = EASE(lam=10.0).fit(X)
    G = (X.T @ X).toarray() + 10.0 * np.eye(25)
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0)
    assert np.allclose(model.W, B, atol=1e-5)
    assert np.allclose(model.scores(X[:3]), (X[:3] @ B), atol=1e-4)


@pytest.mark.parametrize(
    "model",
    [
        Popularity(),
        ItemKNN(k=5),
        RP3Beta(k=5),
        EASE(lam=5.0),
        DLAE(lam=5.0, dropout=0.25),
        ALS(factors=4, iterations=3),
    ],
)
def test_every_model_recommends_saves_and_loads(model, tmp_path):
    X = _toy()
    model.fit(X)
    recs = model.recommend(X[3], 5, exclude=X[3].indices)
    assert len(recs) == 5 and not set(recs.tolist()) & set(X[3].indices.tolist())
    assert 7 not in model.similar_items(7, 5).tolist()
    model.save(tmp_path / "m.npz")
    again = load_model(tmp_path / "m.npz")
    assert type(again) is type(model) and again.describe() == model.describe()
    assert np.allclose(again.scores(X[:4]), model.scores(X[:4]), atol=1e-5)


def test_a_model_file_from_another_version_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    EASE(lam=5.0).fit(_toy()).save(path)
    data = dict(np.load(path))
    data["meta"] = np.array(str(data["meta"]).replace("'format': 1", "'format': 99"))
    np.savez(path, **data)
    with pytest.raises(ConflictError, match="format 99, not 1") as stale:
        load_model(path)
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    assert stale.value.http_status == 409
    with pytest.raises(ConflictError, match="not a model file"):
        load_model(tmp_path / "junk.npz")


def test_new_history_changes_the_answer_without_retraining():
    X = _toy()
    model = EASE(lam=5.0).fit(X)
    before = model.recommend(X[5], 5, exclude=X[5].indices).tolist()
    row = X[5].toarray()
    row[0, before[0]] = 1.0  # they just added the top item to their cart
    after = model.recommend(row, 5, exclude=np.nonzero(row[0])[0]).tolist()
    assert after != before


def test_signal_weights_channels_and_floor_at_zero():
    import datetime as dt

    import pyarrow as pa

    t = dt.datetime(2026, 9, 1, tzinfo=dt.timezone.utc)
    rows = pa.table(
        {
            "person_id": ["a", "a", "a", "b", "b"],
            "product_id": ["P1", "P1", "P2", "P1", "P3"],
            "signal": ["cart_add", "cart_remove", "order", "view", "pick"],
            "channel": ["web", "web", "store", "app", "store"],
            "store_id": [None, None, "S1", None, "S9"],
            "event_at": [t] * 5,
            "quantity": [1.0, 1.0, 3.0, 1.0, 1.0],
        }
    )
    cfg = SignalConfig(
        weights={"view": 1, "cart_add": 2, "cart_remove": -5, "order": 4, "pick": 1.5, "put_back": 1},
        half_life_days=None,
    )
    m = build_matrix(rows, cfg)
    a, b = m.person_index["a"], m.person_index["b"]
    p1, p2, p3 = (m.product_index[p] for p in ("P1", "P2", "P3"))
    assert m.matrix[a, p1] == 0  # 2 - 5 floors at nothing
    assert m.matrix[a, p2] == 12  # an order of three units, weight 4
    assert m.matrix[b, p1] == 1 and m.matrix[b, p3] == 1.5
    online = build_matrix(rows, cfg.with_(channels=("web", "app")))
    assert "P2" not in online.product_index and "P3" not in online.product_index


@pytest.fixture(scope="module")
def served(small_world, tmp_path_factory):
    from omnithread.config import Settings
    from omnithread.identity import resolve_identities
    from omnithread.profile import build_profiles
    from omnithread.recommend.service import Recommendations
    from omnithread.workspace import Workspace

    out, manifest = small_world
    data = tmp_path_factory.mktemp("rec-data")
    ws = Workspace(Settings(data_dir=data)).__enter__()
    ws.ingestor().ingest_paths(manifest["sources"])
    resolve_identities(ws.engine, ws.pseudonymiser)
    build_profiles(ws.engine)
    service = Recommendations.train(ws.engine, ws.pseudonymiser, data / "models")
    yield ws, service, out
    ws.__exit__(None, None, None)


def _a_buyer(ws):
    return ws.engine.scalar(
        "SELECT person_id FROM profiles WHERE orders > 2 AND coalesce(consent_personalisation, "
        "true) ORDER BY revenue DESC, person_id LIMIT 1"
    )


def test_for_you_leaves_out_what_was_bought_unless_it_is_bought_again(served):
    ws, service, _ = served
    person = _a_buyer(ws)
    answer = service.recommend(person, "for_you", n=10)
    assert answer.surface == "for_you" and answer.person_id == person and len(answer.items) == 10
    shown = {service.product_index[i["product_id"]] for i in answer.items}
    assert not shown & (service._bought(person) - service._repeatable())


def test_in_store_only_offers_what_the_store_sells(served):
    ws, service, _ = served
    person = _a_buyer(ws)
    store = ws.engine.scalar(
        "SELECT store_id FROM events WHERE channel = 'store' AND store_id IS NOT NULL "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    answer = service.recommend(person, "in_store", n=8, store=store)
    sold = service._sold(service.serving.available_days, store)
    assert answer.items and all(sold[service.product_index[i["product_id"]]] > 0 for i in answer.items)
    none = service.recommend(person, "in_store", n=5, store="NO-SUCH-STORE")
    assert none.surface == "trending" and "no known inventory" in none.fallback_reason


def test_the_imported_inventory_and_catalogue_decide_what_may_be_served(served, tmp_path):
    ws, service, _ = served
    person = _a_buyer(ws)
    store = ws.engine.scalar(
        "SELECT store_id FROM events WHERE channel = 'store' AND store_id IS NOT NULL "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    for_you = service.recommend(person, "for_you", n=10)
    in_store = service.recommend(person, "in_store", n=10, store=store)
    assert for_you.meta["availability"].startswith("sales") and in_store.meta["availability"].startswith("sales")
    off_sale, sold_out = for_you.items[0]["product_id"], in_store.items[0]["product_id"]
    similar_to = next(
        p
        for p in service.products
        if off_sale in {i["product_id"] for i in service.recommend(surface="similar", product=p, n=10).items}
    )
    carried = [
        p
        for p in service.products
        if service._sold(service.serving.available_days, store)[service.product_index[p]] > 0
    ]
    (tmp_path / "catalogue.csv").write_text(
        "product_id,available,launched_at\n"
        + f"{off_sale},false,\n"
        + f"P-LAUNCHED,true,{ws.engine.scalar('SELECT max(event_at) FROM events').isoformat()}\n"
    )
    (tmp_path / "inventory.csv").write_text(
        "store_id,product_id,quantity\n"
        + "".join(f"{store},{p},{0 if p == sold_out else 5}\n" for p in carried + ["P-LAUNCHED"])
    )
    ws.ingestor().ingest_reference([tmp_path / "catalogue.csv"], "catalogue")
    ws.ingestor().ingest_reference([tmp_path / "inventory.csv"], "inventory")
    service.refresh()
    try:
        # off sale: never served, on any surface
        after = service.recommend(person, "for_you", n=10)
        assert off_sale not in {i["product_id"] for i in after.items}
        assert off_sale not in {i["product_id"] for i in service.recommend(surface="similar", product=similar_to).items}
        assert off_sale not in {i["product_id"] for i in service.recommend(surface="trending", n=50).items}
        # launched by the catalogue, seen by nobody yet: it still gets its slot, marked new
        assert after.items[-1] == {"product_id": "P-LAUNCHED", "score": 0.0, "new": True}
        # in the store: what its inventory holds, nothing sold out, whatever sold there lately
        there = service.recommend(person, "in_store", n=10, store=store)
        assert there.meta["availability"] == f"inventory of {store}"
        shown = {i["product_id"] for i in there.items}
        assert sold_out not in shown and shown <= set(carried) | {"P-LAUNCHED"} and len(shown) == 10
        empty = tmp_path / "empty_store.csv"
        empty.write_text("store_id,product_id,quantity\n" + "".join(f"S-EMPTY,{p},0\n" for p in carried))
        ws.ingestor().ingest_reference([empty], "inventory")
        service.refresh()
        nothing = service.recommend(person, "in_store", n=5, store="S-EMPTY")
        assert nothing.surface == "trending" and "nothing in stock at store S-EMPTY" in nothing.fallback_reason
        trending = service.recommend(surface="trending", store=store, n=50)
        assert trending.meta["availability"] == f"inventory of {store}"
        assert sold_out not in {i["product_id"] for i in trending.items}
    finally:
        ws.engine.execute("DROP TABLE catalogue")
        ws.engine.execute("DROP TABLE inventory")
        service.refresh()


def test_every_persons_answers_computed_together_equal_one_request_each(served, tmp_path):
    import pyarrow.parquet as pq

    ws, service, _ = served
    answers = {a.person_id: a for a in service.recommend_all("for_you", n=8)}
    assert len(answers) == ws.engine.scalar("SELECT count(DISTINCT person_id) FROM identity_map")
    reasons = {a.fallback_reason for a in answers.values()}
    assert (
        None in reasons and any(r and "consent" in r for r in reasons) and any(r and "no history" in r for r in reasons)
    )
    # every non-personal answer and a spread of personal ones, each against its own request
    personal = sorted(p for p, a in answers.items() if a.fallback_reason is None)
    sample = [p for p, a in answers.items() if a.fallback_reason] + personal[:: max(1, len(personal) // 40)]
    for person in sample:
        one = service.recommend(person, "for_you", n=8)
        assert (one.surface, one.items, one.fallback_reason) == (
            answers[person].surface,
            answers[person].items,
            answers[person].fallback_reason,
        ), person
    store = ws.engine.scalar(
        "SELECT store_id FROM events WHERE channel = 'store' AND store_id IS NOT NULL "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    there = {a.person_id: a for a in service.recommend_all("in_store", n=5, store=store)}
    for person in personal[:: max(1, len(personal) // 10)]:
        assert service.recommend(person, "in_store", n=5, store=store).items == there[person].items
    summary = service.export_all(tmp_path / "all.parquet", n=8)
    table = pq.read_table(tmp_path / "all.parquet").to_pydict()
    assert summary["persons"] == len(answers) and summary["rows"] == len(table["person_id"])
    first = personal[0]
    assert [p for who, p in zip(table["person_id"], table["product_id"]) if who == first] == [
        i["product_id"] for i in answers[first].items
    ]
    with pytest.raises(InvalidRequestError, match="surface"):
        next(service.recommend_all("similar"))


def test_unknown_anonymous_and_refusing_people_get_the_non_personal_surface(served):
    ws, service, _ = served
    unknown = service.recommend("nobody-at-all@example.com", "for_you", n=5)
    assert unknown.surface == "trending" and "unknown person" in unknown.fallback_reason and len(unknown.items) == 5
    anonymous = service.recommend(None, "for_you", n=5)
    assert anonymous.surface == "trending" and "anonymous" in anonymous.fallback_reason
    refusing = ws.engine.scalar("SELECT person_id FROM profiles WHERE consent_personalisation = false LIMIT 1")
    assert refusing, "the small world has people who refuse personalisation"
    answer = service.recommend(refusing, "for_you", n=5)
    assert answer.surface == "trending" and "consent" in answer.fallback_reason


def test_similar_bought_together_trending_and_clear_errors(served):
    _, service, _ = served
    product = service.products[0]
    similar = service.recommend(surface="similar", product=product, n=5)
    assert similar.items and product not in {i["product_id"] for i in similar.items}
    together = service.recommend(surface="bought_together", basket=[product], n=5)
    assert product not in {i["product_id"] for i in together.items}
    assert len(service.recommend(surface="trending", n=7).items) == 7
    with pytest.raises(NotFoundError):
        service.recommend(surface="similar", product="NO-SUCH-PRODUCT")
    with pytest.raises(NotFoundError):
        service.recommend(surface="bought_together", basket=["NO-SUCH-PRODUCT"])
    with pytest.raises(InvalidRequestError, match="surface"):
        service.recommend("x", "for_me")


def test_a_saved_model_reopens_and_answers_the_same(served):
    from omnithread.recommend.service import Recommendations

    ws, service, _ = served
    person = _a_buyer(ws)
    again = Recommendations.open(ws.engine, ws.pseudonymiser, service.directory)
    assert again.recommend(person).items == service.recommend(person).items


def test_the_ablation_runs_every_variant(served):
    from omnithread.recommend.ablation import ablation_svg, run_ablation

    ws, _, out = served
    result = run_ablation(ws.engine, ws.pseudonymiser, out / "truth")
    assert list(result["variants"]) == [
        "siloed",
        "online only",
        "store only",
        "joined, no picks",
        "joined",
        "ceiling, no picks",
        "ceiling",
        "ceiling, reachable",
    ]
    for v in result["variants"].values():
        assert 0 <= v["all"]["ndcg@10"] <= 1 and v["all"]["users"] > 0
    assert result["assumptions"] and ablation_svg(result).startswith("<svg")
    # a resolution that decided every link right: no person mixes true persons, and it splits them at
    # least as much as the truth does (only the evidence can join)
    mixed, persons, true_persons = ws.engine.rows("""
        SELECT (SELECT count(*) FROM (SELECT r.person_id FROM reachable_identity_map r JOIN true_identity_map t
                USING (identifier) GROUP BY 1 HAVING count(DISTINCT t.person_id) > 1)) AS mixed,
               (SELECT count(DISTINCT person_id) FROM reachable_identity_map) AS persons,
               (SELECT count(DISTINCT person_id) FROM true_identity_map) AS true_persons""")[0].values()
    assert mixed == 0 and persons > true_persons
    base, joined, top = (result["variants"][k]["all"]["ndcg@10"] for k in ("siloed", "joined", "ceiling"))
    reachable = result["variants"]["ceiling, reachable"]["all"]["ndcg@10"]
    if reachable > base:
        assert result["captured_share_of_reachable_ceiling_gain"] == round((joined - base) / (reachable - base), 4)
    if top > base:
        assert result["reachable_share_of_ceiling_gain"] == round((reachable - base) / (top - base), 4)


def test_the_reachable_ceiling_joins_one_persons_identifiers_through_links_and_shared_keys():
    import pyarrow as pa

    from omnithread.engine.duckdb import DuckDBEngine
    from omnithread.recommend.ablation import reachable_map

    engine = DuckDBEngine()
    truth = {
        "account:a1": "P1",
        "device:d1": "P1",
        "store_session:s1": "P1",
        "store_session:s9": "P1",
        "account:a2": "P2",
        "device:d2": "P2",
        "store_session:s2": "P2",
        "store_session:s3": "P2",
    }
    engine.register("_t", pa.table({"identifier": list(truth), "person_id": list(truth.values())}))
    engine.execute("CREATE TEMP TABLE true_identity_map AS SELECT * FROM _t")
    links = [
        ("account:a1", "device:d1"),  # one person's link
        ("account:a1", "device:d2"),  # a link across true persons: not followed
        ("account:a1", "payment_token:family"),
        ("account:a2", "payment_token:family"),  # a family card
        ("payment_token:family", "store_session:s1"),
        ("payment_token:family", "store_session:s3"),
        ("account:a2", "email:e"),
        ("email:e", "phone:h"),  # a key to a key: not followed
        ("loyalty_card:c", "store_session:s2"),
        ("loyalty_card:c", "phone:h"),
    ]
    engine.register("_e", pa.table({"a": [a for a, _ in links], "b": [b for _, b in links]}))
    engine.execute("CREATE TEMP TABLE identity_edges AS SELECT * FROM _e")
    assert reachable_map(engine) == 5
    persons = {r["identifier"]: r["person_id"] for r in engine.rows("SELECT * FROM reachable_identity_map")}
    groups = sorted(sorted(k for k, v in persons.items() if v == p) for p in set(persons.values()))
    assert groups == [
        ["account:a1", "device:d1", "store_session:s1"],
        ["account:a2", "store_session:s3"],
        ["device:d2"],
        ["store_session:s2"],
        ["store_session:s9"],
    ]


def test_a_persons_rows_read_the_quick_way_equal_the_full_scan(served):
    from collections import Counter

    from omnithread.identity.graph import EVENT_PERSONS_SQL
    from omnithread.recommend.interactions import interaction_rows

    ws, service, _ = served
    people = [
        r["person_id"] for r in ws.engine.rows("SELECT person_id FROM profiles ORDER BY hash(person_id) LIMIT 25")
    ]
    for person in people:
        service._rows_for = (None, None)
        quick = Counter(tuple(sorted(r.items())) for r in service._person_rows(person).to_pylist())
        full = interaction_rows(ws.engine, f"SELECT * FROM ({EVENT_PERSONS_SQL}) WHERE person_id = ?", [person])
        assert quick == Counter(tuple(sorted(r.items())) for r in full.to_pylist()), person


def test_histories_summed_at_training_equal_reading_the_log_after_new_events_and_merges(small_world, tmp_path):
    from omnithread.config import Settings
    from omnithread.identity import resolve_identities
    from omnithread.identity.incremental import update_identities
    from omnithread.recommend.interactions import SignalConfig
    from omnithread.recommend.models import DLAE
    from omnithread.recommend.service import Recommendations
    from omnithread.workspace import Workspace
    from tests.conftest import write_lines

    _, manifest = small_world
    with Workspace(Settings(data_dir=tmp_path / "data")) as ws:
        ws.ingestor().ingest_paths(manifest["sources"])
        resolve_identities(ws.engine, ws.pseudonymiser)
        signals = SignalConfig(
            weights={"view": 0.5, "cart_add": 1.0, "cart_remove": -1.0, "order": 2.0, "pick": 0.5, "put_back": 0.5},
            half_life_days=20.0,
        )
        trained = Recommendations.train(
            ws.engine, ws.pseudonymiser, tmp_path / "models", model=DLAE(lam=100.0), signals=signals
        )
        service = Recommendations.open(ws.engine, ws.pseudonymiser, tmp_path / "models")
        assert service.history is not None and trained.history is not None

        def both_ways(person):
            service._cached_for, service._rows_for = (None, None), (None, None)
            cached, bought = service._history(person, None).toarray().ravel(), service._bought(person)
            saved, service.history = service.history, None
            try:
                service._rows_for = (None, None)
                return cached, bought, service._history(person, None).toarray().ravel(), service._bought(person)
            finally:
                service.history = saved

        people = [
            r["person_id"]
            for r in ws.engine.rows(
                "SELECT person_id, count(*) FROM identity_map GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 40"
            )
        ]
        for person in people:
            cached, bought, logged, bought_logged = both_ways(person)
            assert np.allclose(cached, logged, rtol=1e-5, atol=1e-6) and bought == bought_logged, person
        # events loaded after training: a later view, cart add and order by one account, on a later day
        account = ws.engine.scalar(
            "SELECT user_id FROM events WHERE user_id IS NOT NULL AND event = 'Order Completed' "
            "ORDER BY user_id LIMIT 1"
        )
        device = ws.engine.scalar("""
            SELECT substr(identifier, 8) FROM identity_map WHERE identifier LIKE 'device:%' AND person_id IN (
                SELECT person_id FROM identity_map GROUP BY 1 HAVING count(*) = 1) ORDER BY 1 LIMIT 1""")
        later = (ws.engine.scalar("SELECT max(event_at) FROM events") + timedelta(days=3)).isoformat()
        product = service.products[-1]
        write_lines(
            tmp_path / "new.jsonl",
            [
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "userId": account,
                    "messageId": "late-1",
                    "timestamp": later,
                    "properties": {"product_id": product},
                    "context": {"channel": "web"},
                },
                {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": account,
                    "messageId": "late-2",
                    "timestamp": later,
                    "properties": {"order_id": "late", "products": [{"product_id": product, "quantity": 1}]},
                    "context": {"channel": "web"},
                },
                # a client that sends 'undefined' as the user: the event is the device's (the account is blocked)
                {
                    "type": "track",
                    "event": "Product Added",
                    "userId": "undefined",
                    "anonymousId": device,
                    "messageId": "late-5",
                    "timestamp": later,
                    "properties": {"product_id": service.products[1]},
                    "context": {"channel": "web"},
                },
                # an anonymous device's views, then the device logs in to the account: a merge
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "anonymousId": device,
                    "messageId": "late-3",
                    "timestamp": later,
                    "properties": {"product_id": service.products[0]},
                    "context": {"channel": "web"},
                },
                {
                    "type": "identify",
                    "userId": account,
                    "anonymousId": device,
                    "messageId": "late-4",
                    "timestamp": later,
                    "context": {"channel": "web"},
                },
            ],
        )
        before = service._latest()
        assert ws.ingestor().ingest_paths([tmp_path / "new.jsonl"]).accepted == 5
        update_identities(ws.engine, ws.pseudonymiser)
        # store-wide facts (here the newest event, which decay counts from) are kept for refresh_seconds
        # (60 by default), then read again by themselves at the next request
        service.recommend(surface="trending", n=3)
        assert service._latest() == before
        service._memo_at -= service.serving.refresh_seconds
        service.recommend(surface="trending", n=3)
        assert service._latest() == ws.engine.scalar("SELECT max(event_at) FROM events") > before
        owner = "SELECT person_id FROM identity_map WHERE identifier = ?"
        person = ws.engine.scalar(owner, [f"account:{account}"])
        assert ws.engine.scalar(owner, [f"device:{device}"]) == person
        cached, bought, logged, bought_logged = both_ways(person)
        assert np.allclose(cached, logged, rtol=1e-5, atol=1e-6) and bought == bought_logged
        assert service.product_index[product] in bought and cached[service.product_index[product]] > 0
        for other in people[:10]:
            cached, bought, logged, bought_logged = both_ways(other)
            assert np.allclose(cached, logged, rtol=1e-5, atol=1e-6) and bought == bought_logged, other


def test_training_writes_the_person_by_product_interactions_table(served):
    from omnithread.recommend.interactions import interaction_rows

    ws, service, _ = served
    rows = interaction_rows(ws.engine).to_pydict()
    totals = ws.engine.rows("""SELECT count(*) AS pairs, count(*) FILTER (WHERE weight > 0) AS weighted,
                                      sum(views) AS views, sum(units_ordered) AS units, sum(picks) AS picks,
                                      sum(put_backs) AS put_backs, count(DISTINCT person_id) AS persons
                               FROM interactions""")[0]
    assert totals["weighted"] == service.stats["interactions"]  # what the model was trained on
    assert totals["pairs"] == len(set(zip(rows["person_id"], rows["product_id"])))
    assert totals["views"] == rows["signal"].count("view") and totals["picks"] == rows["signal"].count("pick")
    assert totals["put_backs"] == rows["signal"].count("put_back")
    assert totals["units"] == sum(q for s, q in zip(rows["signal"], rows["quantity"]) if s == "order")
    one = ws.engine.rows("SELECT * FROM interactions WHERE units_ordered > 0 ORDER BY person_id LIMIT 1")[0]
    mine = [
        (s, c)
        for p, q, s, c in zip(rows["person_id"], rows["product_id"], rows["signal"], rows["channel"])
        if p == one["person_id"] and q == one["product_id"]
    ]
    assert one["channels"] == sorted({c for _, c in mine if c}) and one["first_at"] <= one["last_at"]
