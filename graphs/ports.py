"""The port the graphs speak to: a ``ModelPool`` Protocol and the value types that cross it.

Graphs know models only as :class:`ModelCard` (name, prices, latency, descriptors) and call them through
:meth:`ModelPool.ask` (a pool model answers a question) or :meth:`ModelPool.generate` (a router's own text,
optionally continuing a growing trajectory, optionally under a :data:`Constraint`). How a request travels —
a hosted chat API, llama.cpp's completions endpoint with a GBNF grammar, vLLM's structured outputs — is the
implementation's business (``app.pool`` implements this Protocol); tests implement it with scripted models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


class ModelCard(BaseModel):
    """What a router may know of a model: its name, prices, typical latency and descriptors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    price_in: float = Field(ge=0, allow_inf_nan=False, description="USD per 1M input tokens.")
    price_out: float = Field(ge=0, allow_inf_nan=False, description="USD per 1M output tokens.")
    latency_s: float = Field(
        default=1.0, ge=0, allow_inf_nan=False, description="Typical latency of one answer, seconds."
    )
    descriptor: str = Field(min_length=1)
    example_performance: str = ""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for one call at this model's prices."""
        return (input_tokens * self.price_in + output_tokens * self.price_out) / 1_000_000

    def cost_bound(self, prompt: str, max_tokens: int) -> float:
        """What a call may cost at most, before it is made: the prompt's estimate plus the whole reply cap
        (chat formatting adds a few tokens). Used only to refuse calls a budget cannot pay for."""
        return self.cost(estimate_tokens(prompt) + 16, max_tokens)


def estimate_tokens(text: str) -> int:
    """Tokens in a text nobody tokenized: one per 4 characters, rounded up. A pessimistic estimate for
    English (~4.5 characters a token), the same everywhere a cost is estimated rather than measured."""
    return -(-len(text) // 4)


@dataclass(frozen=True)
class CallResult:
    """What one model call produced and cost."""

    model: str
    text: str
    input_tokens: int
    output_tokens: int
    cost: float
    latency_s: float
    finish_reason: str | None = None
    cache: str | None = None
    """'hit' when served from the replay cache, 'miss' when live and recorded, None with no cache."""
    score: float | None = None
    """Recorded-outcome models: the score this model got on the query; else None."""


class EndpointError(RuntimeError):
    """A model endpoint is down, slow or answered with an error."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} endpoint failed: {reason}")
        self.model = model
        self.reason = reason


@dataclass(frozen=True)
class Grammar:
    """Constrain the generated text to a GBNF grammar."""

    gbnf: str


@dataclass(frozen=True)
class JsonSchema:
    """Constrain the generated text to JSON valid under a schema."""

    schema: dict[str, Any]


Constraint = Grammar | JsonSchema
"""A decoding constraint; self-hosted models enforce it, hosted APIs receive none."""


class ModelPool(Protocol):
    """The models a graph may call: a router and the candidates it routes to."""

    @property
    def router(self) -> ModelCard: ...

    @property
    def models(self) -> Sequence[ModelCard]: ...

    @property
    def names(self) -> list[str]: ...

    def get(self, name: str) -> ModelCard:
        """The candidate (or the router) called ``name``, case-insensitively; ``ValueError`` if none."""
        ...

    def find(self, name: str) -> ModelCard | None:
        """The candidate called ``name``, or None."""
        ...

    def cheapest(self) -> ModelCard: ...

    def most_expensive(self) -> ModelCard: ...

    async def ask(
        self, name: str, query: str, *, system: str | None = None, max_tokens: int = 512
    ) -> CallResult:
        """A pool model answers ``query`` (raises :class:`EndpointError` when its endpoint fails)."""
        ...

    async def generate(
        self,
        name: str,
        messages: Sequence[tuple[str, str]],
        *,
        max_tokens: int,
        continuation: str | None = None,
        stop: Sequence[str] | None = None,
        constraint: Constraint | None = None,
    ) -> CallResult:
        """One generation by ``name`` for ``messages`` ((role, text) pairs).

        ``continuation`` None: a fresh reply. A string: the model's own turn so far, which it continues
        (Router-R1's growing trajectory; the same text every step, so the prompt prefix is reused).
        """
        ...
