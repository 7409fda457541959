"""Routers under one interface: pick one candidate per query, with a cost-quality knob where there is one.

``Router.knob`` is the router's cost-quality setting (λ on normalised price for learned routers); the
leaderboard sweeps ``Router.knobs`` to draw a curve. Routers that see the recorded scores (the oracle) are
upper bounds, not deployable routers.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from app.bench.data import Query, price, router_question, score_of
from app.pool import EndpointError, ModelEntry, Pool
from graphs.ports import Grammar
from graphs.router_r1 import prompts, rules

LAMBDAS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


class Router(ABC):
    """Choose one candidate's name for a query."""

    name: ClassVar[str] = "router"
    knobs: tuple[float, ...] = (0.0,)
    """Values of ``knob`` the leaderboard sweeps; one value means a single operating point (a calibrated
    router sets it on the instance)."""

    label_override: str | None = None
    """A label for one configured instance (a calibrated router), instead of the registry name."""

    def __init__(self) -> None:
        self.knob = self.knobs[0]

    @property
    def label(self) -> str:
        return self.label_override or self.name

    def fit(self, train: Sequence[Query], candidates: Sequence[ModelEntry]) -> None:  # noqa: B027
        """Learn from training queries; most routers need nothing."""

    def prepare(self, queries: Sequence[Query]) -> None:  # noqa: B027
        """Batch work before these queries are routed one by one (embeddings, predictions); optional."""

    @abstractmethod
    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str: ...

    async def achoose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        return self.choose(query, candidates)


def _cheapest(candidates: Sequence[ModelEntry]) -> ModelEntry:
    return min(candidates, key=lambda m: (price(m), m.name))


class SingleModel(Router):
    name = "single"

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model

    @property
    def label(self) -> str:
        return f"single:{self.model}"

    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        return self.model


class Cheapest(Router):
    name = "cheapest"

    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        return _cheapest(candidates).name


class MostExpensive(Router):
    name = "most-expensive"

    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        return max(candidates, key=lambda m: (price(m), m.name)).name


class RandomRouter(Router):
    """Uniform choice, seeded per query so that results do not depend on evaluation order."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed

    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        return random.Random(f"{self.seed}:{query.id}").choice(list(candidates)).name


class Oracle(Router):
    """The cheapest candidate with the query's best recorded score (reads the answer key: an upper bound)."""

    name = "oracle"

    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        best = max(score_of(query, m) for m in candidates)
        return _cheapest([m for m in candidates if score_of(query, m) >= best]).name


class _Learned(Router):
    """TF-IDF of the question → predicted score per candidate; pick argmax(predicted − λ·price/max price)."""

    knobs = LAMBDAS

    def __init__(self) -> None:
        super().__init__()
        self._vectorizer: Any = None
        self._names: list[str] = []
        self._cache: dict[str, np.ndarray] = {}

    def fit(self, train: Sequence[Query], candidates: Sequence[ModelEntry]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._names = [m.name for m in candidates]
        self._vectorizer = TfidfVectorizer(
            sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=50_000
        )
        features = self._vectorizer.fit_transform([q.question for q in train])
        targets = np.array([[score_of(q, m) for m in candidates] for q in train])
        self._fit(features, targets)
        self._cache.clear()

    @abstractmethod
    def _fit(self, features: Any, targets: np.ndarray) -> None: ...

    @abstractmethod
    def _predict(self, features: Any) -> np.ndarray: ...

    def predicted(self, question: str) -> np.ndarray:
        if self._vectorizer is None:
            raise RuntimeError(f"router {self.name!r} is not fitted: call fit(train, candidates) first")
        found = self._cache.get(question)
        if found is None:
            found = self._cache[question] = self._predict(self._vectorizer.transform([question]))[0]
        return found

    def predict(self, queries: Sequence[Query]) -> np.ndarray:
        """(queries × fitted candidates) predicted scores, for calibration."""
        return np.stack([self.predicted(q.question) for q in queries])

    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        by_name = dict(zip(self._names, self.predicted(query.question), strict=True))
        top = max(price(m) for m in candidates) or 1.0
        return max(candidates, key=lambda m: (by_name[m.name] - self.knob * price(m) / top, -price(m))).name


class KNNRouter(_Learned):
    """Mean recorded score of the k most similar training questions (cosine on TF-IDF)."""

    name = "knn"

    def __init__(self, k: int = 25) -> None:
        super().__init__()
        self.k = k

    def _fit(self, features: Any, targets: np.ndarray) -> None:
        self._train, self._targets = features, targets

    def _predict(self, features: Any) -> np.ndarray:
        sims = (features @ self._train.T).toarray()
        top = np.argsort(-sims, axis=1)[:, : self.k]
        return np.asarray(self._targets[top].mean(axis=1))


class LogRegRouter(_Learned):
    """One logistic regression per candidate: P(score ≥ 0.5 | question)."""

    name = "logreg"

    def _fit(self, features: Any, targets: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self._models: list[Any] = []
        for column in targets.T:
            labels = (column >= 0.5).astype(int)
            if labels.min() == labels.max():
                self._models.append(float(labels[0]))
            else:
                self._models.append(LogisticRegression(C=2.0, max_iter=1000).fit(features, labels))

    def _predict(self, features: Any) -> np.ndarray:
        columns = [
            np.full(features.shape[0], m) if isinstance(m, float) else m.predict_proba(features)[:, 1]
            for m in self._models
        ]
        return np.stack(columns, axis=1)


class LLMRouter(Router):
    """The pool's router model, prompted zero-shot with descriptors and prices; its route call picks.

    Self-hosted routers (llama.cpp, vLLM) decode under a step grammar that allows only a route call, so the
    reply names a known model; a malformed reply (hosted routers) falls back to the cheapest candidate.
    """

    name = "llm-zero-shot"

    def __init__(self, pool: Pool, max_tokens: int = 320) -> None:
        super().__init__()
        self.pool = pool
        self.max_tokens = max_tokens
        self.malformed = 0
        self.failed = 0  # router calls that raised (endpoint down or slow)
        self._label: str | None = None

    @property
    def label(self) -> str:
        return self._label or self.name

    @classmethod
    def trained(cls, pool: Pool, gguf: str, label: str = "llm-trained") -> LLMRouter:
        """The same router pointed at trained weights (a .gguf path), served by llama.cpp."""
        entry = pool.router.model_copy(update={"backend": "llamacpp", "gguf": gguf, "hf_model": None})
        router = cls(pool.with_router(entry))
        router._label = label
        return router

    def question_text(self, query: Query) -> str:
        """What the router is shown as the question (a subclass adds evidence under it)."""
        return router_question(query)

    def choose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        return asyncio.run(self.achoose(query, candidates))

    async def achoose(self, query: Query, candidates: Sequence[ModelEntry]) -> str:
        messages = prompts.router_messages(self.question_text(query), candidates)
        only_route = rules.StepRules(allow_route=True, allow_answer=False)
        grammar = rules.step_grammar([m.name for m in candidates], rules=only_route)
        try:
            # The router's first step, as the graph makes it: a self-hosted router decodes under the grammar.
            result = await self.pool.generate(
                self.pool.router.name,
                messages,
                continuation="",
                max_tokens=self.max_tokens,
                stop=[prompts.SEARCH_STOP],
                constraint=Grammar(grammar),
            )
        except EndpointError:
            # A slow or failing router must not abort a leaderboard: count it and fall back like a
            # malformed reply does.
            self.failed += 1
            return _cheapest(candidates).name
        text = result.text if prompts.SEARCH_STOP in result.text else result.text + prompts.SEARCH_STOP
        action = prompts.parse_action(text, [m.name for m in candidates])
        if action.kind == "route" and action.model:
            return action.model
        self.malformed += 1
        return _cheapest(candidates).name


Factory = Callable[..., Router]
REGISTRY: dict[str, type[Router]] = {
    cls.name: cls
    for cls in (
        SingleModel,
        Cheapest,
        MostExpensive,
        RandomRouter,
        Oracle,
        KNNRouter,
        LogRegRouter,
        LLMRouter,
    )
}
CLASSICAL = ("single", "cheapest", "most-expensive", "random", "oracle", "knn", "logreg")
