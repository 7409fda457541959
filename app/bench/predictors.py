"""Per-model score predictors on dense query embeddings: k-NN, logistic regression, an MLP, boosted trees.

Each predicts every candidate's score for a query; the router picks argmax(predicted − λ · price / max price)
(:func:`pick`), so λ (``knob``) moves it along its cost-quality curve and :mod:`app.bench.calibrate` can set
λ for a target price. Embeddings come from :class:`app.bench.embeddings.Embeddings` (cached by text hash).
"""

from __future__ import annotations

import sys
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from app.bench.data import Query, price, score_of
from app.bench.embeddings import Embeddings
from app.bench.routers import LAMBDAS, Router
from app.pool import ModelEntry


@contextmanager
def single_threaded() -> Iterator[None]:
    """One BLAS/OpenMP/torch thread while fitting: small fits gain nothing from more, and on a shared,
    oversubscribed CPU spinning worker threads made them 10-50x slower (measured on the 2-core machine)."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # only if something already imported it: never import it for this
    before = torch.get_num_threads() if torch else 0
    try:
        if torch:
            torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            yield
    finally:
        if torch:
            torch.set_num_threads(before)


def pick(predicted: np.ndarray, prices: np.ndarray, lam: float) -> np.ndarray:
    """Index of the chosen candidate per row: best predicted score − λ · price / max price; ties → cheaper."""
    top = float(prices.max()) or 1.0
    value = predicted - lam * prices / top
    # A tie-break far below any real difference in score: among equal values the cheaper model wins.
    return np.asarray(np.argmax(value - 1e-9 * prices / top, axis=-1))


class Predictive(Router):
    """A router that predicts a (queries × candidates) score matrix; λ trades score for price."""

    knobs = LAMBDAS

    def __init__(self) -> None:
        super().__init__()
        self._names: list[str] = []
        self._prices = np.zeros(0)
        self._cache: dict[str, np.ndarray] = {}

    def fit(self, train: Sequence[Query], candidates: Sequence[ModelEntry]) -> None:
        if not train:
            raise ValueError(f"router {self.name!r}: no training queries")
        self._names = [m.name for m in candidates]
        self._prices = np.array([price(m) for m in candidates])
        targets = np.array([[score_of(q, m) for m in candidates] for q in train])
        with single_threaded():
            self._fit_queries(train, targets)
        self._cache.clear()

    @abstractmethod
    def _fit_queries(self, train: Sequence[Query], targets: np.ndarray) -> None: ...

    @abstractmethod
    def _predict_queries(self, queries: Sequence[Query]) -> np.ndarray: ...

    def predict(self, queries: Sequence[Query]) -> np.ndarray:
        """(queries × fitted candidates) predicted scores; each question is predicted once."""
        if not self._names:
            raise RuntimeError(f"router {self.name!r} is not fitted: call fit(train, candidates) first")
        todo = list({q.question: q for q in queries if q.question not in self._cache}.values())
        if todo:
            with single_threaded():
                predicted = self._predict_queries(todo)
            self._cache.update(zip([q.question for q in todo], predicted, strict=True))
        return np.stack([self._cache[q.question] for q in queries])

    def prepare(self, queries: Sequence[Query]) -> None:
        self.predict(queries)

    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        return self._names[int(pick(self.predict([query])[0], self._prices, self.knob))]


class _Embedded(Predictive):
    """Features: the query's embedding."""

    def __init__(self, embeddings: Embeddings | None = None) -> None:
        super().__init__()
        self.embeddings = embeddings or Embeddings("minilm")

    def _fit_queries(self, train: Sequence[Query], targets: np.ndarray) -> None:
        self._fit(self.embeddings([q.question for q in train]), targets)

    def _predict_queries(self, queries: Sequence[Query]) -> np.ndarray:
        return np.clip(self._predict(self.embeddings([q.question for q in queries])), 0.0, 1.0)

    @abstractmethod
    def _fit(self, features: np.ndarray, targets: np.ndarray) -> None: ...

    @abstractmethod
    def _predict(self, features: np.ndarray) -> np.ndarray: ...


class KNNEmbRouter(_Embedded):
    """Mean recorded score of the k nearest training queries by embedding cosine."""

    name = "knn-emb"

    def __init__(self, embeddings: Embeddings | None = None, k: int = 25) -> None:
        super().__init__(embeddings)
        self.k = k

    def _fit(self, features: np.ndarray, targets: np.ndarray) -> None:
        self._x, self._y = features, targets

    def _predict(self, features: np.ndarray) -> np.ndarray:
        k = min(self.k, len(self._x))
        nearest = np.argpartition(-(features @ self._x.T), k - 1, axis=1)[:, :k]
        return np.asarray(self._y[nearest].mean(axis=1))


def _per_model(targets: np.ndarray, make: Any, features: np.ndarray, binary: bool) -> list[Any]:
    """One fitted estimator per candidate column (a constant where a column has a single value)."""
    fitted: list[Any] = []
    for column in targets.T:
        labels = (column >= 0.5).astype(int) if binary else column
        if np.ptp(labels) == 0:
            fitted.append(float(labels[0]))
        else:
            fitted.append(make().fit(features, labels))
    return fitted


def _predict_per_model(fitted: list[Any], features: np.ndarray, binary: bool) -> np.ndarray:
    columns = [
        np.full(len(features), m)
        if isinstance(m, float)
        else (m.predict_proba(features)[:, 1] if binary else m.predict(features))
        for m in fitted
    ]
    return np.stack(columns, axis=1)


class LogRegEmbRouter(_Embedded):
    """One logistic regression per candidate on the embedding: P(score ≥ 0.5 | query)."""

    name = "logreg-emb"

    def _fit(self, features: np.ndarray, targets: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self._models = _per_model(targets, lambda: LogisticRegression(C=1.0, max_iter=500), features, True)

    def _predict(self, features: np.ndarray) -> np.ndarray:
        return _predict_per_model(self._models, features, True)


class MLPRouter(_Embedded):
    """One multi-output MLP regressor (embedding → every candidate's score), early-stopped on 10% of train."""

    name = "mlp"

    def __init__(self, embeddings: Embeddings | None = None, seed: int = 0) -> None:
        super().__init__(embeddings)
        self.seed = seed

    def _fit(self, features: np.ndarray, targets: np.ndarray) -> None:
        from sklearn.neural_network import MLPRegressor

        self._model = MLPRegressor(
            hidden_layer_sizes=(128,), alpha=1e-3, max_iter=200, early_stopping=True, random_state=self.seed
        ).fit(features, targets)

    def _predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.predict(features)).reshape(len(features), -1)


class GBMRouter(_Embedded):
    """One histogram gradient-boosted regressor per candidate on the embedding's first 32 principal axes."""

    name = "gbm"

    def __init__(self, embeddings: Embeddings | None = None, seed: int = 0) -> None:
        super().__init__(embeddings)
        self.seed = seed

    def _fit(self, features: np.ndarray, targets: np.ndarray) -> None:
        from sklearn.decomposition import PCA
        from sklearn.ensemble import HistGradientBoostingRegressor

        # 32 axes keep 9 boosted models to seconds on 2 cores; the trees need few directions.
        self._pca = PCA(n_components=min(32, *features.shape), random_state=self.seed).fit(features)
        reduced = self._pca.transform(features)
        self._models = _per_model(
            targets,
            lambda: HistGradientBoostingRegressor(
                max_iter=60, learning_rate=0.08, max_leaf_nodes=15, random_state=self.seed
            ),
            reduced,
            False,
        )

    def _predict(self, features: np.ndarray) -> np.ndarray:
        return _predict_per_model(self._models, self._pca.transform(features), False)
