"""The service layer for hosts that drive a graph themselves (LangGraph Server): the configured pool with its
servers, and the compiled graph with its runtime context for a run. No trace store is involved."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.pool import Pool, configured_pool
from app.pool.local_servers import LocalServers
from app.service.registry import QuestionError, graph_spec, run_options
from graphs.ports import ModelPool

MAX_TURNS = 16
"""The most route calls (or subtasks) a hosted run may ask for, as the settings allow."""


def serving_pool(settings: Settings) -> tuple[Pool, LocalServers]:
    """The settings' pool, router overrides applied, with its embedded servers started (stop them with
    ``stop_all``; they also stop when the process exits)."""
    pool = configured_pool(settings)
    servers = LocalServers(settings)
    servers.start_for(pool)
    return pool, servers


def run_context(
    settings: Settings,
    pool: ModelPool,
    graph: str,
    budget_usd: float | None = None,
    max_turns: int | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """The compiled graph (no checkpointer), its runtime context and run config for one run of ``graph``;
    the settings' defaults fill what is None, exactly as for a run of the service."""
    if max_turns is not None and not 1 <= max_turns <= MAX_TURNS:
        raise QuestionError(f"max_turns must be between 1 and {MAX_TURNS}")
    return graph_spec(graph).bind(settings, pool, run_options(settings, graph, budget_usd, max_turns))
