"""Evidence for an LLM router: what the most similar train queries scored with each model, as prompt text.

The router reads the question, then one paragraph: the mean recorded score per model over the k nearest
train queries (cosine on query embeddings), the models ranked by value at λ (score − λ · price / max price),
best first. A train query's own evidence leaves the query out, so that training sees what a new query sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.bench.data import Query, price, router_question, score_of
from app.bench.embeddings import Embeddings
from app.bench.routers import LLMRouter
from app.pool import ModelEntry, Pool

SHOWN = 5
"""Models listed in the paragraph (the best-value ones): the prompt stays ~60 tokens longer, not ~150."""


class Evidence:
    """k-nearest-train-query score means, and the paragraph that puts them in a router's prompt."""

    def __init__(self, embeddings: Embeddings, k: int = 25, lam: float = 0.05) -> None:
        self.embeddings, self.k, self.lam = embeddings, k, lam
        self._ids: list[str] = []
        self._x = np.zeros((0, 0), np.float32)
        self._y = np.zeros((0, 0))
        self._models: list[ModelEntry] = []

    def fit(self, train: Sequence[Query], candidates: Sequence[ModelEntry]) -> Evidence:
        self._ids = [q.id for q in train]
        self._x = self.embeddings([q.question for q in train])
        self._y = np.array([[score_of(q, m) for m in candidates] for q in train])
        self._models = list(candidates)
        return self

    def means(self, queries: Sequence[Query]) -> np.ndarray:
        """(queries × models) mean score of each query's k nearest train queries, itself excluded."""
        if not self._ids:
            raise RuntimeError("Evidence is not fitted: call fit(train, candidates) first")
        sims = self.embeddings([q.question for q in queries]) @ self._x.T
        index = {qid: i for i, qid in enumerate(self._ids)}
        for row, query in enumerate(queries):
            if query.id in index:
                sims[row, index[query.id]] = -np.inf  # a train query is not its own neighbour
        k = min(self.k, self._x.shape[0] - 1)
        nearest = np.argpartition(-sims, k, axis=1)[:, :k]
        return np.asarray(self._y[nearest].mean(axis=1))

    def ranked(self, means: np.ndarray) -> list[int]:
        """Model indices by value at λ, best first (ties: the cheaper model first)."""
        prices = [price(m) for m in self._models]
        top = max(prices) or 1.0
        return sorted(range(len(prices)), key=lambda j: (-(means[j] - self.lam * prices[j] / top), prices[j]))

    def paragraph(self, means: np.ndarray) -> str:
        shown = self.ranked(means)[:SHOWN]
        listed = "; ".join(
            f"{self._models[j].name} {means[j]:.2f} (${price(self._models[j]):.2f})" for j in shown
        )
        return (
            f"Evidence: mean recorded score on the {self.k} most similar past queries, best value first: "
            f"{listed}."
        )

    def texts(self, queries: Sequence[Query]) -> dict[str, str]:
        """Query id → the question an evidence-fed router is shown (question, blank line, evidence)."""
        means = self.means(queries)
        return {
            q.id: f"{router_question(q)}\n\n{self.paragraph(row)}"
            for q, row in zip(queries, means, strict=True)
        }

    def top_choice(self, queries: Sequence[Query]) -> dict[str, str]:
        """Query id → the best-value model by the evidence (the warm start's target)."""
        return {
            q.id: self._models[self.ranked(row)[0]].name
            for q, row in zip(queries, self.means(queries), strict=True)
        }


class EvidenceLLMRouter(LLMRouter):
    """An LLM router whose prompt carries :class:`Evidence` under the question; fit() fits the evidence."""

    name = "llm-evidence"

    def __init__(self, pool: Pool, evidence: Evidence, max_tokens: int = 320) -> None:
        super().__init__(pool, max_tokens)
        self.evidence = evidence
        self._texts: dict[str, str] = {}

    def fit(self, train: Sequence[Query], candidates: Sequence[ModelEntry]) -> None:
        self.evidence.fit(train, candidates)
        self._texts.clear()

    def prepare(self, queries: Sequence[Query]) -> None:
        self._texts.update(self.evidence.texts([q for q in queries if q.id not in self._texts]))

    def question_text(self, query: Query) -> str:
        if query.id not in self._texts:
            self.prepare([query])
        return self._texts[query.id]
