"""Choosing signal weights, recency decay and the model on validation data, never on the test.

The validation task is built from the observed log alone: the last ``holdout_days`` are held out, and
what each person bought then (less what they had bought before) is what a configuration must rank
first, trained on everything before. Weights are searched one signal at a time (coordinate descent
over a small grid, twice round), then the half-life, then the model's regularisation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from omnithread.engine.base import Engine
from omnithread.identity.graph import EVENT_PERSONS_SQL
from omnithread.recommend.interactions import SIGNALS, InteractionMatrix, Interactions, SignalConfig, interaction_rows
from omnithread.recommend.metrics import average_precision_at_k, ndcg_at_k, recall_at_k
from omnithread.recommend.models import DLAE, MODELS, top_n

__all__ = ["ValidationTask", "choose_signal_config", "choose_model", "tune", "MODEL_GRID"]

WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0, 4.0)
HALF_LIFE_GRID = (None, 60.0, 21.0, 7.0)


class HoldOut(NamedTuple):
    train: Interactions  # everything before the cut
    test: dict[str, set[int]]  # person -> products bought after the cut that they had not bought before
    bought: dict[str, set[int]]  # person -> products bought before the cut
    cut: float  # epoch seconds


def holdout(
    rows: Interactions, holdout_days: float, products: list[str], target: tuple[str, ...] | None = None
) -> HoldOut:
    """Split ``rows`` at ``holdout_days`` before their end; what each person bought after the cut (on
    ``target`` channels, if given) and had not bought before is what a model must rank first."""
    cut = rows.at.max() - holdout_days * 86400.0
    train, later = rows.subset(rows.at < cut), rows.subset(rows.at >= cut)
    pidx = {p: i for i, p in enumerate(products)}
    bought: dict[str, set[int]] = {}
    orders = train.signal == "order"
    for person, product in zip(
        train.person_names[train.person[orders]].tolist(), train.product_names[train.product[orders]].tolist()
    ):
        bought.setdefault(person, set()).add(pidx[product])
    test: dict[str, set[int]] = {}
    for person, product, signal, channel in zip(
        later.person_names[later.person].tolist(),
        later.product_names[later.product].tolist(),
        later.signal.tolist(),
        later.channel.tolist(),
    ):
        if signal == "order" and (target is None or channel in target) and pidx[product] not in bought.get(person, ()):
            test.setdefault(person, set()).add(pidx[product])
    return HoldOut(train, test, bought, cut)


def history_rows(m: InteractionMatrix, keys: list, n_products: int) -> sp.csr_matrix:
    """The rows of ``m`` for ``keys`` in order (an empty row where a key has none)."""
    if not keys:
        return sp.csr_matrix((0, n_products), dtype=np.float32)
    empty = sp.csr_matrix((1, n_products), dtype=np.float32)
    return sp.vstack([m.matrix[m.person_index[k]] if k in m.person_index else empty for k in keys]).tocsr()


def judge(
    model, history: sp.csr_matrix, fallback: np.ndarray, test: list[set[int]], bought: list[set[int]], k: int = 10
) -> dict:
    """NDCG@k, Recall@20 and MAP@k of each row's ranking (``fallback`` for rows with no history),
    with what the person bought before left out."""
    ndcg, recall, ap = [], [], []
    scores = model.scores(history) if history.nnz else np.zeros(history.shape)
    for row, rel in enumerate(test):
        has = history.indptr[row + 1] > history.indptr[row]
        top = top_n(scores[row] if has else fallback, 20, list(bought[row]))
        ndcg.append(ndcg_at_k(top, rel, k))
        recall.append(recall_at_k(top, rel, 20))
        ap.append(average_precision_at_k(top, rel, k))
    return {
        "ndcg@10": float(np.mean(ndcg)) if ndcg else 0.0,
        "recall@20": float(np.mean(recall)) if recall else 0.0,
        "map@10": float(np.mean(ap)) if ap else 0.0,
        "users": len(test),
    }


class ValidationTask:
    """Train on the log before ``holdout_days`` from its end; judge on purchases after."""

    def __init__(self, engine: Engine, holdout_days: float = 7.0, persons_sql: str = EVENT_PERSONS_SQL):
        rows = Interactions(interaction_rows(engine, persons_sql))
        self.products = rows.product_names.tolist()
        split = holdout(rows, holdout_days, self.products) if rows.n else HoldOut(rows, {}, {}, 0.0)
        self.train, self.test, self.bought = split.train, split.test, split.bought
        self.as_of = datetime.fromtimestamp(split.cut, UTC)

    def score(self, config: SignalConfig, make_model=lambda: DLAE(lam=100.0, dropout=0.33)) -> float:
        """Mean NDCG@10 over people who bought something new in the held-out days."""
        people = sorted(self.test)
        if not people or not self.train.n:
            return 0.0  # nothing to judge on: every configuration ties, the first is kept
        m = self.train.matrix(config, products=self.products, as_of=self.as_of)
        model = make_model().fit(m.matrix)
        return judge(
            model,
            history_rows(m, people, len(self.products)),
            np.asarray(m.matrix.sum(axis=0)).ravel(),
            [self.test[p] for p in people],
            [self.bought.get(p, set()) for p in people],
        )["ndcg@10"]


def choose_signal_config(
    task: ValidationTask,
    start: SignalConfig = SignalConfig(),
    rounds: int = 2,
    make_model=lambda: DLAE(lam=100.0, dropout=0.33),
) -> tuple[SignalConfig, dict]:
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
                    trail.append(
                        {
                            "weights": dict(cand.weights),
                            "half_life_days": cand.half_life_days,
                            "ndcg@10": round(score, 4),
                        }
                    )
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


MODEL_GRID = (
    [("dlae", {"lam": lam, "dropout": p}) for lam in (50.0, 100.0, 200.0, 400.0) for p in (0.25, 0.33, 0.5)]
    + [("ease", {"lam": lam}) for lam in (50.0, 200.0, 500.0)]
    + [("itemknn", {"k": 100}), ("als", {"factors": 32, "regularization": 0.05, "iterations": 15})]
)


def choose_model(task: ValidationTask, config: SignalConfig, seed: int = 0) -> tuple[str, dict, dict]:
    """The model family and parameters with the best validation NDCG@10 under ``config``."""

    results = []
    for name, params in MODEL_GRID:
        score = task.score(config, lambda name=name, params=params: MODELS[name](seed=seed, **params))
        results.append((score, name, params))
    score, name, params = max(results, key=lambda r: r[0])
    return (
        name,
        params,
        {
            "validation_ndcg@10": round(score, 4),
            "tried": [{"model": n, **p, "ndcg@10": round(s, 4)} for s, n, p in results],
        },
    )


def tune(engine: Engine, holdout_days: float = 7.0, seed: int = 0) -> dict:
    """Signal weights and decay, then the model, chosen on the log's own validation split."""
    task = ValidationTask(engine, holdout_days)
    config, signal_report = choose_signal_config(task)
    name, params, model_report = choose_model(task, config, seed)
    return {
        "config": config,
        "model": name,
        "params": params,
        "holdout_days": holdout_days,
        "signals": signal_report,
        "models": model_report,
    }
