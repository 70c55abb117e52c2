"""omnithread's recommenders against the libraries a retail data team would pick, on MovieLens 100K.

Every rating is an interaction (strength 1). Two fixed protocols: per user the last 20% of
interactions by time held out (temporal), and per user a random 20% with seed 0 (random). Full
ranking over the catalogue, training items left out, the same metric code for everyone
(``omnithread.recommend.metrics``).

Baselines, run in the same process: EASE (lambda 500) as in its paper, written out here; ``implicit``'s
ALS (32 factors, its defaults otherwise); ``implicit``'s item-kNN (cosine, 100 neighbours).
omnithread: every model family, each with its hyper-parameters chosen on a validation split of the
training data made the same way as the test split (never on the test), and the family with the best
validation score as "omnithread best".

Latency: one request at a time (a user's history in, the top 10 with seen items left out), 1,000
requests, p50 and p99 in milliseconds; for ``implicit`` its own ``recommend``.

    python benchmarks/recommend_movielens.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit asks for it; numpy's own calls are small here

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from omnithread.recommend.metrics import evaluate_model, random_split, temporal_split  # noqa: E402
from omnithread.recommend.models import top_n  # noqa: E402
from omnithread.recommend.select import choose  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "movielens-100k" / "ml-100k.inter"


def load():
    d = np.loadtxt(DATA, skiprows=1, dtype=np.int64, usecols=(0, 1, 3))
    _, users = np.unique(d[:, 0], return_inverse=True)
    _, items = np.unique(d[:, 1], return_inverse=True)
    return users, items, d[:, 2], (users.max() + 1, items.max() + 1)


class ReferenceEASE:
    """EASE exactly as in Steck (2019), lambda 500."""

    name = "EASE (lambda 500)"

    def fit(self, X):
        t = time.perf_counter()
        G = (X.T @ X).toarray().astype(np.float64)
        G[np.diag_indices_from(G)] += 500.0
        P = np.linalg.inv(G)
        self.B = P / (-np.diag(P))
        np.fill_diagonal(self.B, 0.0)
        self.fit_seconds = time.perf_counter() - t
        return self

    def scores(self, history):
        return np.asarray(history @ self.B)

    def serve(self, row, seen):
        return top_n(self.scores(row)[0], 10, seen)


class ImplicitModel:
    def __init__(self, name, model):
        self.name, self.model = name, model

    def fit(self, X):
        t = time.perf_counter()
        self.model.fit(X, show_progress=False)
        self.fit_seconds = time.perf_counter() - t
        self.X = X
        return self

    def scores(self, history):
        from implicit.cpu.als import AlternatingLeastSquares

        if isinstance(self.model, AlternatingLeastSquares):
            users = self.model.recalculate_user(np.arange(history.shape[0]), history)
            return np.asarray(users) @ np.asarray(self.model.item_factors).T
        return np.asarray((history @ self.model.similarity).todense())

    def serve(self, row, seen):
        from implicit.cpu.als import AlternatingLeastSquares

        if isinstance(self.model, AlternatingLeastSquares):
            ids, _ = self.model.recommend(0, row, N=10, filter_already_liked_items=True, recalculate_user=True)
        else:
            ids, _ = self.model.recommend(0, row, N=10, filter_already_liked_items=True)
        return ids


class Ours:
    def __init__(self, name, model):
        self.name, self.model = name, model
        self.fit_seconds = model.fit_seconds

    def scores(self, history):
        return self.model.scores(history)

    def serve(self, row, seen):
        return self.model.recommend(row, 10, seen)


def latency(model, train: sp.csr_matrix, requests: int = 1000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, train.shape[0], requests)
    times = []
    for u in users.tolist():
        row = train[u]
        t = time.perf_counter()
        model.serve(row, row.indices)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    return {"p50_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def run_protocol(name: str, split, times_matrix) -> dict:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import CosineRecommender

    baselines = [
        ReferenceEASE().fit(split.train),
        ImplicitModel("implicit ALS (32 factors)", AlternatingLeastSquares(factors=32, random_state=0)).fit(
            split.train
        ),
        ImplicitModel("implicit item-kNN (cosine, 100)", CosineRecommender(K=100)).fit(split.train),
    ]
    t = time.perf_counter()
    chosen = choose(split.train, times_matrix, seed=0)
    select_seconds = time.perf_counter() - t
    ours = {family: Ours(f"omnithread {family}", model) for family, (model, _) in chosen.items()}
    best_family = max(chosen, key=lambda f: chosen[f][1])
    rows = []
    for m in baselines + list(ours.values()):
        result = evaluate_model(m, split)
        row = {
            "model": m.name,
            "ndcg@10": result["ndcg@10"],
            "recall@20": result["recall@20"],
            "map@10": result["map@10"],
            "coverage@10": result["coverage@10"],
            "fit_seconds": round(m.fit_seconds, 2),
        }
        if isinstance(m, Ours):
            fam = m.name.split()[-1]
            row["params"] = {k: v for k, v in m.model.describe().items() if k != "model"}
            row["validation_ndcg@10"] = chosen[fam][1]
        row.update(latency(m, split.train))
        rows.append(row)
    best_baseline = max((r for r in rows[:3]), key=lambda r: r["ndcg@10"])
    ours_best = next(r for r in rows if r["model"] == f"omnithread {best_family}")
    return {
        "protocol": name,
        "rows": rows,
        "best_baseline": best_baseline["model"],
        "omnithread_best": ours_best["model"],
        "gain_over_best_baseline": round(ours_best["ndcg@10"] / best_baseline["ndcg@10"] - 1, 4),
        "selection_seconds": round(select_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    users, items, stamps, shape = load()
    times = sp.csr_matrix((stamps.astype(np.float64), (users, items)), shape=shape)
    results = [
        run_protocol("temporal", temporal_split(users, items, stamps, shape), times),
        run_protocol("random", random_split(users, items, shape, seed=0), None),
    ]
    if args.json:
        json.dump({"data": "MovieLens 100K", "protocols": results}, sys.stdout)
        sys.stdout.write("\n")
        return
    for res in results:
        print(f"\nMovieLens 100K, {res['protocol']} protocol (20% of each user held out)")
        print(
            f"{'model':34}{'NDCG@10':>9}{'Rec@20':>9}{'MAP@10':>9}{'cov@10':>9}{'fit s':>8}{'p50 ms':>8}"
            f"{'p99 ms':>8}  chosen by validation"
        )
        for r in res["rows"]:
            chosen = " ".join(f"{k}={v}" for k, v in r.get("params", {}).items())
            if "validation_ndcg@10" in r:
                chosen += f" (val NDCG@10 {r['validation_ndcg@10']})"
            print(
                f"{r['model']:34}{r['ndcg@10']:>9.4f}{r['recall@20']:>9.4f}{r['map@10']:>9.4f}"
                f"{r['coverage@10']:>9.3f}{r['fit_seconds']:>8.2f}{r['p50_ms']:>8.3f}{r['p99_ms']:>8.3f}  {chosen}"
            )
        print(
            f"omnithread best by validation: {res['omnithread_best']}; best baseline: {res['best_baseline']}; "
            f"NDCG@10 gain {res['gain_over_best_baseline']:+.1%} (selection took {res['selection_seconds']} s)"
        )


if __name__ == "__main__":
    main()
