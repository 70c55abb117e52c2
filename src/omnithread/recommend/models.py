"""Recommendation models behind one interface: ``fit``, ``recommend``, ``similar_items``, ``save``, ``load``.

Every model learns from a users-by-items matrix of interaction strengths (``scipy.sparse`` CSR, any
non-negative weights) and scores items for a user from that user's row, so a history that changed a
moment ago (a cart add, a put-back) changes the next answer without retraining.

* :class:`Popularity`: items by total interaction strength (optionally recent only); the non-personal
  fallback.
* :class:`ItemKNN`: item-to-item collaborative filtering, the classic Amazon approach: cosine
  similarity between item columns, the ``k`` nearest kept per item, with shrinkage.
* :class:`RP3Beta`: a three-step random walk user-item-user-item with popularity penalised by ``beta``
  (Paudel et al. 2017), a strong graph baseline.
* :class:`EASE`: the closed-form shallow autoencoder (Steck 2019): ``B = I - P / diag(P)`` with
  ``P = (X'X + lambda I)^-1``.
* :class:`DLAE`: the denoising linear autoencoder (Steck 2020), EASE with dropout as regulariser.
* :class:`ALS`: implicit-feedback matrix factorisation from the ``implicit`` library.
* :class:`Blend`: a weighted sum of members' scores, each scaled per user to unit maximum.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from omnithread.errors import ConfigError, ConflictError, InvalidRequestError

__all__ = [
    "Recommender",
    "Popularity",
    "ItemKNN",
    "RP3Beta",
    "EASE",
    "DLAE",
    "ALS",
    "Blend",
    "load_model",
    "MODELS",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1


def _csr(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.nnz and X.data.min() < 0:
        raise InvalidRequestError("interactions", float(X.data.min()), "non-negative interaction strengths")
    return X


def top_n(scores: np.ndarray, n: int, exclude=None) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first, leaving out ``exclude``."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None and len(exclude):
        scores[np.asarray(exclude)] = -np.inf
    n = min(n, int(np.isfinite(scores).sum()))
    if n <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, n - 1)[:n]
    return part[np.lexsort((part, -scores[part]))]


class Recommender:
    """Base: subclasses set ``name``, implement ``_fit`` and ``scores`` and list their ``params``."""

    name = "base"
    params: tuple[str, ...] = ()

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.n_items = 0
        self.fit_seconds = 0.0

    def fit(self, X) -> "Recommender":
        X = _csr(X)
        started = time.perf_counter()
        self.n_items = X.shape[1]
        self._fit(X)
        self.fit_seconds = time.perf_counter() - started
        return self

    def _fit(self, X: sp.csr_matrix) -> None:
        raise NotImplementedError

    def scores(self, history: sp.csr_matrix) -> np.ndarray:
        """Scores (rows of ``history``, n_items) for users whose interactions are ``history``."""
        raise NotImplementedError

    def recommend(self, history, n: int = 10, exclude=None) -> np.ndarray:
        """The ``n`` best items for one user whose interactions are the row ``history``."""
        row = _csr(history if sp.issparse(history) else np.asarray(history, np.float32).reshape(1, -1))
        return top_n(self.scores(row)[0], n, exclude)

    def similar_items(self, item: int, n: int = 10) -> np.ndarray:
        """Items most like ``item``: what this model recommends to someone who has only that item."""
        row = sp.csr_matrix((np.ones(1, np.float32), ([0], [item])), shape=(1, self.n_items))
        return top_n(self.scores(row)[0], n, [item])

    def describe(self) -> dict:
        return {"model": self.name, **{p: getattr(self, p) for p in self.params}}

    # -------------------------------------------------------------- persistence

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def save(self, path: Path | str) -> None:
        meta = {
            "format": FORMAT_VERSION,
            "model": self.name,
            "seed": self.seed,
            "n_items": self.n_items,
            **{p: getattr(self, p) for p in self.params},
        }
        arrays = {f"state_{k}": v for k, v in self._state().items()}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.array(repr(meta)), **arrays)
        Path(path).write_bytes(buffer.getvalue())


def load_model(path: Path | str) -> Recommender:
    """Load a model saved by :meth:`Recommender.save`; refuses files of another format version."""
    import ast

    try:
        data = np.load(Path(path), allow_pickle=False)
        meta = ast.literal_eval(str(data["meta"]))
    except (OSError, ValueError, KeyError, SyntaxError) as exc:
        raise ConflictError(f"{path} is not a model file saved by omnithread ({exc})", "train the model again") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise ConflictError(
            f"{path} is a model file of format {meta.get('format')}, not {FORMAT_VERSION}",
            "train the model again with this version",
        )
    cls = MODELS.get(meta["model"])
    if cls is None or cls is Blend:
        raise ConflictError(
            f"{path} holds a model this version does not know ({meta['model']})",
            "train the model again with this version",
        )
    model = cls(seed=meta["seed"], **{p: meta[p] for p in cls.params})
    model.n_items = meta["n_items"]
    model._restore({k[len("state_") :]: data[k] for k in data.files if k.startswith("state_")})
    return model


class Popularity(Recommender):
    name = "popularity"

    def _fit(self, X):
        self.counts = np.asarray(X.sum(axis=0)).ravel().astype(np.float64)

    def scores(self, history):
        return np.tile(self.counts, (history.shape[0], 1))

    def similar_items(self, item, n=10):
        return top_n(self.counts, n, [item])

    def _state(self):
        return {"counts": self.counts}

    def _restore(self, state):
        self.counts = state["counts"]


class _ItemItem(Recommender):
    """Models whose scores are ``history @ W`` for an item-item matrix ``W``."""

    def scores(self, history):
        out = history @ self.W
        return out.toarray() if sp.issparse(out) else np.asarray(out)

    def similar_items(self, item, n=10):
        col = self.W[item]
        col = col.toarray().ravel() if sp.issparse(col) else np.asarray(col).ravel()
        return top_n(col, n, [item])

    def _state(self):
        if sp.issparse(self.W):
            W = self.W.tocsr()
            return {"data": W.data, "indices": W.indices, "indptr": W.indptr, "shape": np.array(W.shape)}
        return {"dense": self.W}

    def _restore(self, state):
        if "dense" in state:
            self.W = state["dense"]
        else:
            self.W = sp.csr_matrix((state["data"], state["indices"], state["indptr"]), shape=tuple(state["shape"]))


class ItemKNN(_ItemItem):
    name = "itemknn"
    params = ("k", "shrink")

    def __init__(self, k: int = 100, shrink: float = 10.0, seed: int = 0):
        super().__init__(seed)
        self.k, self.shrink = int(k), float(shrink)

    def _fit(self, X):
        B = X.copy()
        B.data[:] = 1.0
        co = (B.T @ B).toarray().astype(np.float64)
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.shrink + 1e-9)
        np.fill_diagonal(sim, 0.0)
        self.W = _keep_top_k(sim, self.k)


def _keep_top_k(sim: np.ndarray, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each column (an item's neighbours), as CSR."""
    n = sim.shape[0]
    k = min(k, n - 1) if n > 1 else 0
    if k <= 0:
        return sp.csr_matrix(sim.shape, dtype=np.float32)
    idx = np.argpartition(-sim, k - 1, axis=0)[:k]
    cols = np.repeat(np.arange(n)[None, :], k, axis=0)
    vals = sim[idx, cols]
    return sp.csr_matrix((vals.ravel().astype(np.float32), (idx.ravel(), cols.ravel())), shape=sim.shape)


class RP3Beta(_ItemItem):
    name = "rp3beta"
    params = ("alpha", "beta", "k")

    def __init__(self, alpha: float = 1.0, beta: float = 0.6, k: int = 200, seed: int = 0):
        super().__init__(seed)
        self.alpha, self.beta, self.k = float(alpha), float(beta), int(k)

    def _fit(self, X):
        B = X.copy()
        B.data[:] = 1.0
        Pui = sp.diags(1 / np.maximum(np.asarray(B.sum(axis=1)).ravel(), 1)) @ B
        Piu = sp.diags(1 / np.maximum(np.asarray(B.sum(axis=0)).ravel(), 1)) @ B.T
        if self.alpha != 1.0:
            Pui.data **= self.alpha
            Piu.data **= self.alpha
        W = (Piu @ Pui).toarray()
        pop = np.maximum(np.asarray(B.sum(axis=0)).ravel(), 1)
        W = W / (pop[None, :] ** self.beta)
        np.fill_diagonal(W, 0.0)
        self.W = _keep_top_k(W, self.k)


class EASE(_ItemItem):
    name = "ease"
    params = ("lam",)

    def __init__(self, lam: float = 500.0, seed: int = 0):
        super().__init__(seed)
        self.lam = float(lam)

    def _fit(self, X):
        G = (X.T @ X).toarray().astype(np.float64)
        G[np.diag_indices_from(G)] += self.lam
        P = np.linalg.inv(G)
        W = -P / np.diag(P)[None, :]
        np.fill_diagonal(W, 0.0)
        self.W = W.astype(np.float32)


class DLAE(_ItemItem):
    """The denoising linear autoencoder (Steck 2020): EASE's closed form with dropout as regulariser,
    ``B = (G + L)^-1 G`` with ``L = p / (1 - p) diag(G) + lambda I``: popular items are regularised
    more, and the diagonal is left free (dropout, not a constraint, keeps it from the identity)."""

    name = "dlae"
    params = ("lam", "dropout")

    def __init__(self, lam: float = 100.0, dropout: float = 0.33, seed: int = 0):
        super().__init__(seed)
        if not 0 <= dropout < 1:
            raise ConfigError("dropout", dropout, "a share in [0, 1)")
        self.lam, self.dropout = float(lam), float(dropout)

    def _fit(self, X):
        G = (X.T @ X).toarray().astype(np.float64)
        A = G.copy()
        A[np.diag_indices_from(A)] += self.dropout / (1 - self.dropout) * np.diag(G) + self.lam
        self.W = np.linalg.solve(A, G).astype(np.float32)


class ALS(Recommender):
    name = "als"
    params = ("factors", "regularization", "iterations", "alpha")

    def __init__(
        self, factors: int = 32, regularization: float = 0.05, iterations: int = 15, alpha: float = 1.0, seed: int = 0
    ):
        super().__init__(seed)
        self.factors, self.regularization = int(factors), float(regularization)
        self.iterations, self.alpha = int(iterations), float(alpha)

    def _fit(self, X):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit's own threads do the work; BLAS threads would fight them
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                iterations=self.iterations,
                alpha=self.alpha,
                random_state=self.seed,
                calculate_training_loss=False,
            )
            model.fit(X, show_progress=False)
        self.item_factors = np.asarray(model.item_factors, np.float32)
        self._prepare()

    def _prepare(self):
        V = self.item_factors.astype(np.float64)
        self._gram = V.T @ V + self.regularization * np.eye(V.shape[1])
        self._gram_inv = np.linalg.inv(self._gram)

    def user_factors(self, history: sp.csr_matrix) -> np.ndarray:
        """Solve for users' factors from their rows (the ALS user step), so new history counts at once."""
        V = self.item_factors.astype(np.float64)
        out = np.zeros((history.shape[0], V.shape[1]))
        for u in range(history.shape[0]):
            start, end = history.indptr[u], history.indptr[u + 1]
            items, conf = history.indices[start:end], self.alpha * history.data[start:end].astype(np.float64)
            if not len(items):
                continue
            Vi = V[items]
            A = self._gram + (Vi.T * conf) @ Vi
            b = ((1 + conf)[:, None] * Vi).sum(axis=0)
            out[u] = np.linalg.solve(A, b)
        return out

    def scores(self, history):
        return self.user_factors(history) @ self.item_factors.T

    def similar_items(self, item, n=10):
        V = self.item_factors
        norms = np.linalg.norm(V, axis=1) + 1e-9
        sims = (V @ V[item]) / (norms * norms[item])
        return top_n(sims, n, [item])

    def _state(self):
        return {"item_factors": self.item_factors}

    def _restore(self, state):
        self.item_factors = state["item_factors"]
        self._prepare()


class Blend(Recommender):
    """Members' scores, each scaled per user to a maximum of one, summed with ``weights``."""

    name = "blend"

    def __init__(self, members: list[Recommender], weights: list[float], seed: int = 0):
        super().__init__(seed)
        if len(members) != len(weights) or not members:
            raise ConfigError("weights", weights, "one weight per member")
        self.members, self.weights = members, [float(w) for w in weights]

    def _fit(self, X):
        for m in self.members:
            m.fit(X)

    def scores(self, history):
        total = None
        for m, w in zip(self.members, self.weights):
            s = m.scores(history).astype(np.float64)
            top = np.abs(s).max(axis=1, keepdims=True)
            s = w * s / np.where(top > 0, top, 1.0)
            total = s if total is None else total + s
        return total

    def similar_items(self, item, n=10):
        row = sp.csr_matrix((np.ones(1, np.float32), ([0], [item])), shape=(1, self.n_items))
        return top_n(self.scores(row)[0], n, [item])

    def describe(self):
        return {"model": "blend", "members": [m.describe() for m in self.members], "weights": self.weights}

    def save(self, path):
        raise ConfigError("model", "blend", "a single model; save each member of a blend")


MODELS = {cls.name: cls for cls in (Popularity, ItemKNN, RP3Beta, EASE, DLAE, ALS, Blend)}
