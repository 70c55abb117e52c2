"""Choosing signal weights, recency decay and the model on validation data, never on the test.

The validation task is built from the observed log alone: the last ``holdout_days`` are held out, and
what each person bought then (less what they had bought before) is what a configuration must rank
first, trained on everything before. Weights are searched one signal at a time (coordinate descent
over a small grid, twice round), then the half-life, then the model's regularisation.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import scipy.sparse as sp

from omnithread.engine.base import Engine
from omnithread.identity.graph import EVENT_PERSONS_SQL
from omnithread.recommend.interactions import SIGNALS, Interactions, SignalConfig, interaction_rows
from omnithread.recommend.metrics import ndcg_at_k
from omnithread.recommend.models import DLAE, top_n

__all__ = ["ValidationTask", "choose_signal_config", "choose_model", "tune", "MODEL_GRID"]

WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0, 4.0)
HALF_LIFE_GRID = (None, 60.0, 21.0, 7.0)


class ValidationTask:
    """Train on the log before ``holdout_days`` from its end; judge on purchases after."""

    def __init__(self, engine: Engine, holdout_days: float = 7.0, persons_sql: str = EVENT_PERSONS_SQL):
        rows = interaction_rows(engine, persons_sql)
        at = pc.max(rows.column("event_at")).as_py()
        import datetime as dt

        cut = at - dt.timedelta(days=holdout_days)
        before = pc.less(rows.column("event_at"), cut)
        self.train = Interactions(rows.filter(before))
        after = rows.filter(pc.invert(before)).to_pydict()
        self.products = sorted(set(rows.column("product_id").to_pylist()))
        pidx = {p: i for i, p in enumerate(self.products)}
        bought: dict[str, set[int]] = {}
        orders = self.train.signal == "order"
        for person, product in zip(self.train.person_names[self.train.person[orders]].tolist(),
                                   self.train.product_names[self.train.product[orders]].tolist()):
            bought.setdefault(person, set()).add(pidx[product])
        test: dict[str, set[int]] = {}
        for person, product, signal in zip(after["person_id"], after["product_id"], after["signal"]):
            if signal == "order" and pidx[product] not in bought.get(person, ()):
                test.setdefault(person, set()).add(pidx[product])
        self.test, self.bought = test, bought
        self.as_of = cut

    def score(self, config: SignalConfig, make_model=lambda: DLAE(lam=100.0, dropout=0.33)) -> float:
        """Mean NDCG@10 over people who bought something new in the held-out days."""
        people = sorted(self.test)
        if not people or not self.train.n:
            return 0.0  # nothing to judge on: every configuration ties, the first is kept
        m = self.train.matrix(config, products=self.products, as_of=self.as_of)
        model = make_model().fit(m.matrix)
        idx = [m.person_index.get(p, -1) for p in people]
        empty = sp.csr_matrix((1, len(self.products)), dtype=np.float32)
        hist = sp.vstack([m.matrix[i] if i >= 0 else empty for i in idx]).tocsr()
        scores = model.scores(hist)
        fallback = np.asarray(m.matrix.sum(axis=0)).ravel()
        total = 0.0
        for row, p in enumerate(people):
            s = scores[row] if hist.indptr[row + 1] > hist.indptr[row] else fallback
            total += ndcg_at_k(top_n(s, 10, list(self.bought.get(p, ()))), self.test[p], 10)
        return total / len(people) if people else 0.0


def choose_signal_config(task: ValidationTask, start: SignalConfig = SignalConfig(), rounds: int = 2,
                         make_model=lambda: DLAE(lam=100.0, dropout=0.33)) -> tuple[SignalConfig, dict]:
    """Coordinate descent over signal weights, then the half-life; returns the best and the trail."""
    best, best_score = start, task.score(start, make_model)
    trail = [{"weights": dict(start.weights), "half_life_days": start.half_life_days, "ndcg@10": round(best_score, 4)}]
    for _ in range(rounds):
        improved = False
        for signal in SIGNALS:
            for w in WEIGHT_GRID:
                if w == best.weights.get(signal):
                    continue
                cand = best.with_(weights={**best.weights, signal: w})
                if not any(v > 0 for k, v in cand.weights.items() if k == "order"):
                    continue  # purchases must count
                score = task.score(cand, make_model)
                if score > best_score + 1e-4:
                    best, best_score, improved = cand, score, True
                    trail.append({"weights": dict(cand.weights), "half_life_days": cand.half_life_days,
                                  "ndcg@10": round(score, 4)})
        for h in HALF_LIFE_GRID:
            if h == best.half_life_days:
                continue
            cand = best.with_(half_life_days=h)
            score = task.score(cand, make_model)
            if score > best_score + 1e-4:
                best, best_score, improved = cand, score, True
                trail.append({"weights": dict(cand.weights), "half_life_days": h, "ndcg@10": round(score, 4)})
        if not improved:
            break
    return best, {"validation_ndcg@10": round(best_score, 4), "trail": trail, "people": len(task.test)}


MODEL_GRID = ([("dlae", {"lam": lam, "dropout": p}) for lam in (50.0, 100.0, 200.0, 400.0) for p in (0.25, 0.33, 0.5)]
              + [("ease", {"lam": lam}) for lam in (50.0, 200.0, 500.0)]
              + [("itemknn", {"k": 100}), ("als", {"factors": 32, "regularization": 0.05, "iterations": 15})])


def choose_model(task: ValidationTask, config: SignalConfig, seed: int = 0) -> tuple[str, dict, dict]:
    """The model family and parameters with the best validation NDCG@10 under ``config``."""
    from omnithread.recommend.models import MODELS

    results = []
    for name, params in MODEL_GRID:
        score = task.score(config, lambda name=name, params=params: MODELS[name](seed=seed, **params))
        results.append((score, name, params))
    score, name, params = max(results, key=lambda r: r[0])
    return name, params, {"validation_ndcg@10": round(score, 4),
                          "tried": [{"model": n, **p, "ndcg@10": round(s, 4)} for s, n, p in results]}


def tune(engine: Engine, holdout_days: float = 7.0, seed: int = 0) -> dict:
    """Signal weights and decay, then the model, chosen on the log's own validation split."""
    task = ValidationTask(engine, holdout_days)
    config, signal_report = choose_signal_config(task)
    name, params, model_report = choose_model(task, config, seed)
    return {"config": config, "model": name, "params": params, "holdout_days": holdout_days,
            "signals": signal_report, "models": model_report}
