"""Graph factories for LangGraph Server: ``langgraph.json`` serves Router-R1 and R2-Reasoner through them.

LangGraph Server hands each run its context as JSON, while the graphs take the pool object in theirs. So
each factory makes sure this process's pool is up (settings from the environment as everywhere in
routegraph, the pool's embedded llama.cpp servers started once, in a worker thread so the server's event
loop never blocks) and returns the graph with a JSON context schema instead: ``budget_usd`` and
``max_turns`` per run, everything else from the settings, the pool from this process.

Runs served this way are recorded by LangGraph Server (threads, checkpoints, runs), not in routegraph's
trace store: the server drives the graph, and routegraph stores hops only for the runs it drives itself.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field
from pydantic.dataclasses import dataclass as validated_dataclass

from app.config import Settings, load_settings
from app.service.hosting import run_context, serving_pool
from graphs.ports import ModelPool

_lock = threading.Lock()
_hosted: Hosted | None = None


@dataclass(frozen=True)
class Hosted:
    """What this server process runs graphs with: its settings and its pool (servers started)."""

    settings: Settings
    pool: ModelPool
    servers: Any


def hosted() -> Hosted:
    """This process's settings and pool, started on first use (blocking: call it from a thread)."""
    global _hosted
    with _lock:
        if _hosted is None:
            settings = load_settings()
            pool, servers = serving_pool(settings)
            _hosted = Hosted(settings, pool, servers)
        return _hosted


@validated_dataclass(frozen=True)
class RunOptions:
    """A run's context under LangGraph Server: what a client may set (JSON), unset values from the settings.

    Constructing it resolves the graph's full runtime context (pool included); every attribute the graph's
    nodes read that is not an option here comes from that context.
    """

    graph: ClassVar[str]
    budget_usd: Annotated[float | None, Field(gt=0, description="USD the run may spend.")] = None
    max_turns: Annotated[
        int | None,
        Field(ge=1, le=16, description="Router-R1: route calls before a forced answer; R2: most subtasks."),
    ] = None

    def __post_init__(self) -> None:
        if _hosted is None:
            raise RuntimeError("the pool is not started: LangGraph Server calls the graph factory first")
        _, context, _ = run_context(
            _hosted.settings, _hosted.pool, self.graph, self.budget_usd, self.max_turns
        )
        object.__setattr__(self, "_context", context)
        # The options the nodes read under these names hold the resolved values, not None.
        object.__setattr__(self, "budget_usd", context.budget_usd)
        object.__setattr__(self, "max_turns", getattr(context, "max_turns", None) or context.max_subtasks)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the options lack: pool, token caps, grammar switches, ...
        context = self.__dict__.get("_context")
        if context is None:
            raise AttributeError(name)
        return getattr(context, name)


@validated_dataclass(frozen=True)
class RouterR1Options(RunOptions):
    """Router-R1's per-run options."""

    graph: ClassVar[str] = "router-r1"


@validated_dataclass(frozen=True)
class R2Options(RunOptions):
    """R2-Reasoner's per-run options (``max_turns`` bounds the subtasks)."""

    graph: ClassVar[str] = "r2-reasoner"


async def router_r1() -> Any:
    """The Router-R1 graph for LangGraph Server (``app.langgraph_server:router_r1``)."""
    return await _served(RouterR1Options)


async def r2_reasoner() -> Any:
    """The R2-Reasoner graph for LangGraph Server (``app.langgraph_server:r2_reasoner``)."""
    return await _served(R2Options)


async def _served(options: type[RunOptions]) -> Any:
    process = await asyncio.to_thread(hosted)
    compiled, _, _ = run_context(process.settings, process.pool, options.graph)
    return compiled.copy(update={"context_schema": options})
