"""Model and hyper-parameter choice by validation: hold out the end (or a random share) of each user's
training interactions, score every candidate there, keep the best by NDCG@10, refit it on everything."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from omnithread.recommend.metrics import Split, evaluate_model, random_split, temporal_split
from omnithread.recommend.models import ALS, DLAE, EASE, ItemKNN, Popularity, RP3Beta

__all__ = ["CANDIDATES", "validation_split", "choose"]

CANDIDATES = {  # family -> [(class, parameters)]
    "popularity": [(Popularity, {})],
    "itemknn": [(ItemKNN, {"k": k}) for k in (50, 100, 200)],
    "rp3beta": [(RP3Beta, {"alpha": 1.0, "beta": b}) for b in (0.3, 0.5, 0.7)],
    "ease": [(EASE, {"lam": lam}) for lam in (100, 200, 500, 1000)],
    "dlae": [(DLAE, {"lam": lam, "dropout": p}) for lam in (50, 100, 200) for p in (0.25, 0.33, 0.5)],
    "als": [(ALS, {"factors": f, "regularization": 0.05, "iterations": 15}) for f in (32, 64)],
}


def validation_split(train: sp.csr_matrix, times: sp.csr_matrix | None, seed: int = 0) -> Split:
    """Split a training matrix again, the same way the test was split: by time when ``times`` (same
    shape, each interaction's time) is given, at random otherwise."""
    coo = train.tocoo()
    if times is not None:
        t = np.asarray(times.tocsr()[coo.row, coo.col]).ravel()
        return temporal_split(coo.row, coo.col, t, train.shape, weights=coo.data)
    return random_split(coo.row, coo.col, train.shape, seed=seed + 1, weights=coo.data)


def choose(
    train: sp.csr_matrix, times: sp.csr_matrix | None = None, families=None, seed: int = 0, folds: int = 3
) -> dict:
    """Per family, the candidate with the best validation NDCG@10, refit on all of ``train``.

    A temporal split has one validation fold (the latest interactions); a random one averages
    ``folds`` splits with different seeds, so a choice does not hang on one draw.
    Returns family -> (fitted model, validation NDCG@10)."""
    vals = [validation_split(train, times, seed + f) for f in range(1 if times is not None else folds)]
    best = {}
    for family, candidates in CANDIDATES.items():
        if families is not None and family not in families:
            continue
        for cls, params in candidates:
            score = float(np.mean([evaluate_model(cls(seed=seed, **params).fit(v.train), v)["ndcg@10"] for v in vals]))
            if family not in best or score > best[family][2]:
                best[family] = (cls, params, round(score, 4))
    return {f: (cls(seed=seed, **params).fit(train), score) for f, (cls, params, score) in best.items()}
