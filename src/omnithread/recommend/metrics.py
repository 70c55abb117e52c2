"""Ranking metrics and splits: full ranking over the catalogue, items seen in training left out.

Definitions (binary relevance; ``rel`` is a user's held-out items, ``ranked`` the list served):

* ``recall@k = |top k ∩ rel| / |rel|``
* ``ndcg@k = DCG@k / IDCG@k`` with ``DCG = sum 1/log2(rank + 1)`` over hits and IDCG the DCG of
  ``min(|rel|, k)`` hits at the top;
* ``map@k`` (average precision at k) ``= sum over hits at rank i of precision@i / min(|rel|, k)``;
* coverage@k: the share of the catalogue that appears in anyone's top k.

>>> round(ndcg_at_k([5, 1, 7], {1, 9}, 3), 4)  # one hit at rank 2 of two relevant: (1/log2 3) / (1 + 1/log2 3)
0.3869
>>> recall_at_k([5, 1, 7], {1, 9}, 3), average_precision_at_k([5, 1, 7], {1, 9}, 3)
(0.5, 0.25)
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp

__all__ = [
    "ndcg_at_k",
    "recall_at_k",
    "average_precision_at_k",
    "temporal_split",
    "random_split",
    "evaluate_model",
    "Split",
]


def ndcg_at_k(ranked, relevant, k: int) -> float:
    if not relevant:
        return 0.0
    dcg = sum(1 / math.log2(i + 2) for i, item in enumerate(list(ranked)[:k]) if item in relevant)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / idcg


def recall_at_k(ranked, relevant, k: int) -> float:
    if not relevant:
        return 0.0
    return len(set(list(ranked)[:k]) & set(relevant)) / len(relevant)


def average_precision_at_k(ranked, relevant, k: int) -> float:
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, item in enumerate(list(ranked)[:k]):
        if item in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / min(len(relevant), k)


class Split:
    """Train matrix and, per user, the held-out items (and optional labels per held-out item)."""

    def __init__(self, train: sp.csr_matrix, test: dict[int, set[int]], labels: dict | None = None):
        self.train, self.test, self.labels = train, test, labels or {}


def _matrix(users, items, weights, shape) -> sp.csr_matrix:
    m = sp.csr_matrix((np.asarray(weights, np.float32), (users, items)), shape=shape)
    m.sum_duplicates()
    return m


def temporal_split(users, items, times, shape, test_share: float = 0.2, weights=None) -> Split:
    """Per user, the last ``test_share`` of their interactions by time are held out (at least one,
    for users with two or more)."""
    users, items, times = np.asarray(users), np.asarray(items), np.asarray(times)
    weights = np.ones(len(users), np.float32) if weights is None else np.asarray(weights, np.float32)
    order = np.lexsort((np.arange(len(users)), times, users))
    return _finish(users, items, weights, _hold_out_ends(users, order, test_share), shape)


def random_split(users, items, shape, test_share: float = 0.2, seed: int = 0, weights=None) -> Split:
    """Per user, a random ``test_share`` of their interactions held out, with a fixed seed."""
    users, items = np.asarray(users), np.asarray(items)
    weights = np.ones(len(users), np.float32) if weights is None else np.asarray(weights, np.float32)
    rng = np.random.default_rng(seed)
    key = rng.random(len(users))
    order = np.lexsort((key, users))
    return _finish(users, items, weights, _hold_out_ends(users, order, test_share), shape)


def _hold_out_ends(users: np.ndarray, order: np.ndarray, test_share: float) -> np.ndarray:
    """With rows grouped by user in ``order``, mark the last ``test_share`` of each user's rows (at
    least one, for users with two or more)."""
    u = users[order]
    starts = np.r_[0, np.nonzero(np.diff(u))[0] + 1] if len(u) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(u)] if len(u) else np.zeros(0, np.int64)
    is_test = np.zeros(len(users), bool)
    for s, e in zip(starts.tolist(), ends.tolist()):
        n = e - s
        if n >= 2:
            is_test[order[e - max(1, int(math.ceil(test_share * n))) : e]] = True
    return is_test


def _finish(users, items, weights, is_test, shape) -> Split:
    train = _matrix(users[~is_test], items[~is_test], weights[~is_test], shape)
    test: dict[int, set[int]] = {}
    for u, i in zip(users[is_test].tolist(), items[is_test].tolist()):
        test.setdefault(u, set()).add(i)
    seen = train.tolil().rows
    test = {u: s - set(seen[u]) for u, s in test.items()}  # only what is new to the user counts
    return Split(train, {u: s for u, s in test.items() if s})


def evaluate_model(
    model,
    split: Split,
    ks=(10, 20),
    batch: int = 512,
    history: sp.csr_matrix | None = None,
    groups: dict[int, str] | None = None,
) -> dict:
    """Full-catalogue ranking for every test user, training items excluded; means over users.

    ``history`` (default the training matrix) is what the model sees of each user at serving time.
    ``groups`` (user -> label) adds the same metrics per group (for example the channel of the
    held-out purchase)."""
    history = split.train if history is None else history
    users = np.array(sorted(split.test))
    kmax = max(ks)
    per_user = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg", "map")}
    shown = {k: set() for k in ks}
    latencies = []
    by_group: dict[str, dict[str, list[float]]] = {}
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        t = time.perf_counter()
        scores = model.scores(history[chunk]).astype(np.float64)
        latencies.append((time.perf_counter() - t) / max(len(chunk), 1))
        seen = history[chunk]
        for row, u in enumerate(chunk.tolist()):
            s = scores[row]
            s[seen.indices[seen.indptr[row] : seen.indptr[row + 1]]] = -np.inf
            top = np.argpartition(-s, kmax - 1)[:kmax]
            top = top[np.argsort(-s[top], kind="stable")]
            rel = split.test[u]
            for k in ks:
                values = {
                    "recall": recall_at_k(top, rel, k),
                    "ndcg": ndcg_at_k(top, rel, k),
                    "map": average_precision_at_k(top, rel, k),
                }
                for m, v in values.items():
                    per_user[f"{m}@{k}"].append(v)
                    if groups is not None and u in groups:
                        by_group.setdefault(groups[u], {}).setdefault(f"{m}@{k}", []).append(v)
                shown[k].update(top[:k].tolist())
    result = {name: round(float(np.mean(v)), 4) if v else 0.0 for name, v in per_user.items()}
    result.update({f"coverage@{k}": round(len(shown[k]) / split.train.shape[1], 4) for k in ks})
    result["users"] = len(users)
    if by_group:
        result["by_group"] = {
            g: {**{n: round(float(np.mean(v)), 4) for n, v in vals.items()}, "users": len(next(iter(vals.values())))}
            for g, vals in sorted(by_group.items())
        }
    return result
