"""The graph registry: the one list of graphs routegraph runs, and what the service needs of each.

A graph is a name users pick (``router-r1``, ``r2-reasoner``), a package under ``graphs/`` (whose source
hash versions its runs), the runtime context it runs with, the classes its state holds (the only ones a
checkpoint may deserialise) and whether its stored trajectory earns Router-R1 rewards. Everything that
once kept its own list of graphs (runs, provenance, checkpoints, scoring, evaluation, the UI, the server)
asks this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from graphs.ports import ModelPool


class QuestionError(ValueError):
    """The question cannot be asked (empty, a bad option, or an unknown graph)."""


class ContextLengthError(QuestionError):
    """The question (with its context) does not fit the context window of the model that reads it."""


@dataclass(frozen=True)
class RunOptions:
    """A run's options, stored on its row so that a resume uses the same ones."""

    budget_usd: float
    max_turns: int
    """Route calls (Router-R1) or subtasks (R2-Reasoner) allowed."""

    def as_dict(self) -> dict[str, Any]:
        return {"budget_usd": self.budget_usd, "max_turns": self.max_turns}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    package: str
    """The graph's package under ``graphs/``: its source is what ``graph_version`` hashes."""
    scored: bool
    """Its trajectory is a Router-R1 text (think / search / information / answer), scored by the rewards."""
    default_turns: Callable[[Settings], int]
    bind: Callable[[Settings, ModelPool, RunOptions], tuple[Any, Any, dict[str, Any]]]
    """(settings, pool, options) → (compiled graph without a checkpointer, runtime context, run config)."""
    state_types: Callable[[], tuple[type, ...]]
    """Our classes inside its state (imported lazily: listing graphs does not build them)."""
    first_prompt: Callable[[str, ModelPool, RunOptions], list[tuple[str, str]]]
    """The router's first prompt for a question: what must fit its context window for the run to start."""


def _bind_router_r1(
    settings: Settings, pool: ModelPool, options: RunOptions
) -> tuple[Any, Any, dict[str, Any]]:
    from graphs.router_r1.graph import graph
    from graphs.router_r1.state import RouterR1Context

    context = RouterR1Context(
        pool=pool,
        budget_usd=options.budget_usd,
        max_turns=options.max_turns,
        response_max_tokens=settings.response_max_tokens,
        router_max_tokens=settings.router_max_tokens,
        min_routes=settings.min_routes,
    )
    return graph, context, {}


def _bind_r2(settings: Settings, pool: ModelPool, options: RunOptions) -> tuple[Any, Any, dict[str, Any]]:
    from graphs.r2_reasoner.graph import graph, recursion_limit
    from graphs.r2_reasoner.state import R2Context

    context = R2Context(
        pool=pool,
        budget_usd=options.budget_usd,
        max_subtasks=options.max_turns,
        allocation=settings.r2_allocation,
        escalate=settings.r2_escalate,
        aggregator=settings.r2_aggregator,
        response_max_tokens=settings.response_max_tokens,
        router_max_tokens=settings.router_max_tokens,
    )
    return graph, context, {"recursion_limit": recursion_limit(options.max_turns)}


def _router_r1_prompt(question: str, pool: ModelPool, options: RunOptions) -> list[tuple[str, str]]:
    from graphs.router_r1.prompts import router_messages

    return router_messages(question, pool.models)


def _r2_prompt(question: str, pool: ModelPool, options: RunOptions) -> list[tuple[str, str]]:
    from graphs.r2_reasoner.prompts import decompose_messages

    return decompose_messages(question, options.max_turns)


def _router_r1_types() -> tuple[type, ...]:
    from graphs.router_r1.prompts import Action

    return (Action,)


def _r2_types() -> tuple[type, ...]:
    from graphs.r2_reasoner.prompts import Subtask
    from graphs.r2_reasoner.state import SubtaskResult

    return (Subtask, SubtaskResult)


REGISTRY: dict[str, GraphSpec] = {
    spec.name: spec
    for spec in (
        GraphSpec(
            name="router-r1",
            package="graphs.router_r1",
            scored=True,
            default_turns=lambda s: s.max_turns,
            bind=_bind_router_r1,
            state_types=_router_r1_types,
            first_prompt=_router_r1_prompt,
        ),
        GraphSpec(
            name="r2-reasoner",
            package="graphs.r2_reasoner",
            scored=False,
            default_turns=lambda s: s.r2_max_subtasks,
            bind=_bind_r2,
            state_types=_r2_types,
            first_prompt=_r2_prompt,
        ),
    )
}
GRAPHS: tuple[str, ...] = tuple(REGISTRY)
SCORED_GRAPHS: tuple[str, ...] = tuple(name for name, spec in REGISTRY.items() if spec.scored)


def graph_spec(name: str) -> GraphSpec:
    """The graph called ``name``; :class:`QuestionError` naming the choices when there is none."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise QuestionError(f"unknown graph {name!r}; choose one of {', '.join(GRAPHS)}")
    return spec


def run_options(
    settings: Settings, graph: str, budget_usd: float | None, max_turns: int | None
) -> RunOptions:
    """The run's options with the settings' defaults filled in (``max_turns`` bounds R2's subtasks)."""
    if budget_usd is not None and not 0 < budget_usd < float("inf"):
        raise QuestionError("the budget must be a positive, finite amount of USD")
    if max_turns is not None and max_turns < 1:
        raise QuestionError("max turns must be at least 1")
    return RunOptions(
        budget_usd=budget_usd if budget_usd is not None else settings.budget_usd,
        max_turns=max_turns if max_turns is not None else graph_spec(graph).default_turns(settings),
    )
