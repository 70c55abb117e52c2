"""``omnithread evaluate``: every model on the event log, with a temporal split.

The last ``holdout_days`` of the log are held out; what each person bought then (any channel), less
what they had interacted with before, is what a model must rank first. Full ranking over the
catalogue; Recall, NDCG and MAP at 10 and 20 and coverage; per channel of the held-out purchase
(online: web, app, voice; store) and over all.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from omnithread.engine.base import Engine
from omnithread.recommend.interactions import STORE, SignalConfig, build_matrix, interaction_rows
from omnithread.recommend.metrics import Split, evaluate_model
from omnithread.recommend.models import ALS, DLAE, EASE, ItemKNN, Popularity

__all__ = ["evaluate_log", "DEFAULT_MODELS"]

DEFAULT_MODELS = {
    "popularity": lambda: Popularity(),
    "itemknn": lambda: ItemKNN(k=100),
    "ease": lambda: EASE(lam=200.0),
    "dlae": lambda: DLAE(lam=100.0, dropout=0.33),
    "als": lambda: ALS(factors=32, regularization=0.05, iterations=15),
}


def evaluate_log(
    engine: Engine, holdout_days: float = 14.0, signals: SignalConfig = SignalConfig(), models=None
) -> dict:
    rows = interaction_rows(engine)
    if rows.num_rows == 0:
        return {"error": "no product interactions in the log"}
    at = rows.column("event_at").to_pylist()
    cut = max(at) - timedelta(days=holdout_days)
    before = np.array([t < cut for t in at])
    train_rows, test_rows = rows.filter(before), rows.filter(~before)
    train = build_matrix(train_rows, signals)
    products, persons = train.products, train.persons
    pi, ui = train.product_index, train.person_index
    groups: dict[str, dict[int, set[int]]] = {"online": {}, "store": {}}
    d = test_rows.to_pydict()
    for person, product, signal, channel in zip(d["person_id"], d["product_id"], d["signal"], d["channel"]):
        if signal != "order" or person not in ui or product not in pi:
            continue
        u, i = ui[person], pi[product]
        if train.matrix[u, i] > 0:
            continue
        groups["store" if channel in STORE else "online"].setdefault(u, set()).add(i)
    every: dict[int, set[int]] = {}
    for g in groups.values():
        for u, items in g.items():
            every.setdefault(u, set()).update(items)
    result = {
        "holdout_days": holdout_days,
        "cut": cut.isoformat(),
        "train_interactions": int(train.matrix.nnz),
        "persons": len(persons),
        "products": len(products),
        "held_out": {
            g: {"persons": len(v), "purchases": sum(len(s) for s in v.values())}
            for g, v in {**groups, "all": every}.items()
        },
        "models": {},
    }
    for name, make in (models or DEFAULT_MODELS).items():
        model = make().fit(train.matrix)
        scores = {}
        for g, test in {**groups, "all": every}.items():
            if test:
                scores[g] = evaluate_model(model, Split(train.matrix, test))
        result["models"][name] = {"fit_seconds": round(model.fit_seconds, 3), **scores}
    return result
