"""A task-aware prior, and the prior blended with per-query evidence by weights learnt on held-out folds.

The prior needs no task label at routing time (a user's traffic has none): a logistic classifier on the
query's embedding gives P(task | query), and the prior is Σ_task P(task | query) · (task's mean score per
model on train). On a task never seen in training the classifier spreads its mass over the tasks the query
resembles, so the prior degrades to a mixture of their means rather than a guess.

The blend predicts, per model m, w0_m + w1_m · prior_m + w2_m · knn_m (non-negative w1, w2), where knn_m
is the mean score of the k nearest train queries; the weights are fitted on out-of-fold predictions
(k-fold over train), not set by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.bench.data import Query
from app.bench.embeddings import Embeddings
from app.bench.predictors import Predictive

FOLDS = 5


def knn_means(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(train_x))
    nearest = np.argpartition(-(x @ train_x.T), k - 1, axis=1)[:, :k]
    return np.asarray(train_y[nearest].mean(axis=1))


class TaskPrior:
    """P(task | embedding) × per-task mean scores."""

    def fit(self, x: np.ndarray, tasks: Sequence[str], y: np.ndarray) -> TaskPrior:
        labels = np.asarray(tasks)
        self.tasks = sorted(set(tasks))
        self.means = np.stack([y[labels == t].mean(axis=0) for t in self.tasks])
        if len(self.tasks) == 1:
            self._clf: Any = None
            return self
        from sklearn.linear_model import LogisticRegression

        self._clf = LogisticRegression(C=4.0, max_iter=1000).fit(x, labels)
        assert list(self._clf.classes_) == self.tasks
        return self

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if self._clf is None:
            return np.ones((len(x), 1))
        return np.asarray(self._clf.predict_proba(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.probabilities(x) @ self.means


class TaskPriorRouter(Predictive):
    """The task-aware prior alone: what a router knows from the kind of query, nothing query-specific."""

    name = "task-prior"

    def __init__(self, embeddings: Embeddings | None = None) -> None:
        super().__init__()
        self.embeddings = embeddings or Embeddings("minilm")

    def _fit_queries(self, train: Sequence[Query], targets: np.ndarray) -> None:
        x = self.embeddings([q.question for q in train])
        self._prior = TaskPrior().fit(x, [q.task for q in train], targets)

    def _predict_queries(self, queries: Sequence[Query]) -> np.ndarray:
        return self._prior.predict(self.embeddings([q.question for q in queries]))


class BlendRouter(Predictive):
    """Task prior + k-NN evidence, blended per model with weights fitted on out-of-fold predictions."""

    name = "blend"

    def __init__(self, embeddings: Embeddings | None = None, k: int = 25, seed: int = 0) -> None:
        super().__init__()
        self.embeddings = embeddings or Embeddings("minilm")
        self.k, self.seed = k, seed
        self.weights = np.zeros((0, 3))
        """Per model: intercept, prior weight, k-NN weight (what the blend learnt)."""

    def _fit_queries(self, train: Sequence[Query], targets: np.ndarray) -> None:
        from sklearn.linear_model import LinearRegression
        from sklearn.model_selection import KFold

        x = self.embeddings([q.question for q in train])
        tasks = [q.task for q in train]
        oof = np.zeros((2, *targets.shape))
        n_folds = min(FOLDS, len(train))
        for fit_idx, held_idx in KFold(n_folds, shuffle=True, random_state=self.seed).split(x):
            prior = TaskPrior().fit(x[fit_idx], [tasks[i] for i in fit_idx], targets[fit_idx])
            oof[0, held_idx] = prior.predict(x[held_idx])
            oof[1, held_idx] = knn_means(x[fit_idx], targets[fit_idx], x[held_idx], self.k)
        weights = []
        for m in range(targets.shape[1]):
            fitted = LinearRegression(positive=True).fit(oof[:, :, m].T, targets[:, m])
            weights.append([fitted.intercept_, *fitted.coef_])
        self.weights = np.array(weights)
        self._x, self._y = x, targets
        self._prior = TaskPrior().fit(x, tasks, targets)

    def _predict_queries(self, queries: Sequence[Query]) -> np.ndarray:
        x = self.embeddings([q.question for q in queries])
        prior, knn = self._prior.predict(x), knn_means(self._x, self._y, x, self.k)
        blended = self.weights[:, 0] + self.weights[:, 1] * prior + self.weights[:, 2] * knn
        return np.clip(blended, 0.0, 1.0)
