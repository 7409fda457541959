"""The service layer for hosts that drive a graph themselves (LangGraph Server): the configured pool with its
servers, and the compiled graph with its runtime context for a run. No trace store is involved."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.local_models import LocalServers
from app.pool import Pool
from app.runs import GRAPHS, QuestionError, graph_and_context, run_options
from app.service import configured_pool


def serving_pool(settings: Settings) -> tuple[Pool, LocalServers]:
    """The settings' pool, router overrides applied, with its embedded servers started (stop them with
    ``stop_all``; they also stop when the process exits)."""
    pool = configured_pool(settings)
    servers = LocalServers(settings)
    servers.start_for(pool)
    return pool, servers


def run_context(
    settings: Settings, pool: Pool, graph: str, budget_usd: float | None = None, max_turns: int | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """The compiled graph (no checkpointer), its runtime context and run config for one run of ``graph``;
    the settings' defaults fill what is None, exactly as for a run of the service."""
    if graph not in GRAPHS:
        raise QuestionError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    if budget_usd is not None and budget_usd <= 0:
        raise QuestionError("the budget must be a positive amount of USD")
    if max_turns is not None and not 1 <= max_turns <= 16:
        raise QuestionError("max_turns must be between 1 and 16")
    return graph_and_context(settings, pool, graph, **run_options(settings, graph, budget_usd, max_turns))
