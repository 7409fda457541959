"""The one name → router class registry of the bench, and how a name becomes a router instance."""

from __future__ import annotations

from app.bench import routers
from app.bench.blend import BlendRouter, TaskPriorRouter
from app.bench.embeddings import Embeddings
from app.bench.evidence import EvidenceLLMRouter
from app.bench.factorisation import MFRouter
from app.bench.predictors import GBMRouter, KNNEmbRouter, LogRegEmbRouter, MLPRouter
from app.bench.routers import Router

EMBEDDED: dict[str, type[Router]] = {
    cls.name: cls
    for cls in (KNNEmbRouter, LogRegEmbRouter, MLPRouter, GBMRouter, MFRouter, TaskPriorRouter, BlendRouter)
}
"""Routers that read query embeddings (constructed with the shared :class:`Embeddings`)."""
ROUTERS: dict[str, type[Router]] = {**routers.REGISTRY, **EMBEDDED, EvidenceLLMRouter.name: EvidenceLLMRouter}
CLASSICAL = (*routers.CLASSICAL, *EMBEDDED)
"""Routers that need no LLM: cheap enough for every split, the shifted ones included."""


def make(name: str, embeddings: Embeddings | None = None) -> Router:
    """A classical router by registry name (single models and LLM routers are built by app.bench.run)."""
    if name in EMBEDDED:
        return EMBEDDED[name](embeddings=embeddings)  # type: ignore[call-arg]
    if name not in routers.REGISTRY or name in ("single", "llm-zero-shot"):
        raise ValueError(f"unknown classical router {name!r}; known: {', '.join(CLASSICAL)}")
    return routers.REGISTRY[name]()
