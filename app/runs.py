"""A graph run: its options, the compiled graph and runtime context it runs with, the loop that streams it
and stores each hop as it arrives, hops as stored rows, and the result handed to callers.

The graphs stay pure: :func:`drive` persists every hop the moment the stream yields it, so a crash mid-run
leaves every completed hop in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.pool import Pool
from graphs.hops import Hop
from storage import db

GRAPHS = ("router-r1", "r2-reasoner")
FINAL_KEYS = ("answer", "error", "transcript")
"""State keys a graph's nodes may set that the run row keeps."""


class QuestionError(ValueError):
    """The question cannot be asked (empty, or an unknown graph)."""


def run_options(
    settings: Settings, graph: str, budget_usd: float | None, max_turns: int | None
) -> dict[str, Any]:
    """The run's options with the settings' defaults filled in: stored on the run, so a resume uses them.

    For r2-reasoner ``max_turns`` bounds the number of subtasks.
    """
    default_turns = settings.r2_max_subtasks if graph == "r2-reasoner" else settings.max_turns
    return {
        "budget_usd": budget_usd if budget_usd is not None else settings.budget_usd,
        "max_turns": max_turns if max_turns is not None else default_turns,
    }


def graph_and_context(
    settings: Settings, pool: Pool, graph: str, budget_usd: float, max_turns: int
) -> tuple[Any, Any, dict[str, Any]]:
    """The compiled graph (no checkpointer yet), its runtime context and extra run config."""
    s = settings
    if graph == "router-r1":
        from graphs.router_r1.graph import graph as compiled
        from graphs.router_r1.state import RouterR1Context

        context = RouterR1Context(
            pool=pool,
            budget_usd=budget_usd,
            max_turns=max_turns,
            response_max_tokens=s.response_max_tokens,
            router_max_tokens=s.router_max_tokens,
            min_routes=s.min_routes,
        )
        return compiled, context, {}
    if graph == "r2-reasoner":
        from graphs.r2_reasoner.graph import graph as r2_graph
        from graphs.r2_reasoner.graph import recursion_limit
        from graphs.r2_reasoner.state import R2Context

        r2_context = R2Context(
            pool=pool,
            budget_usd=budget_usd,
            max_subtasks=max_turns,
            allocation=s.r2_allocation,
            escalate=s.r2_escalate,
            aggregator=s.r2_aggregator,
            response_max_tokens=s.response_max_tokens,
            router_max_tokens=s.router_max_tokens,
        )
        return r2_graph, r2_context, {"recursion_limit": recursion_limit(max_turns)}
    raise QuestionError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")


class RunResult(BaseModel):
    run_id: int
    graph: str
    question: str
    status: str
    answer: str
    error: str | None
    total_cost: float
    input_tokens: int
    output_tokens: int
    latency_s: float
    hops: list[Hop]

    @classmethod
    def from_hops(
        cls,
        run_id: int,
        graph: str,
        question: str,
        status: str,
        answer: str,
        error: str | None,
        hops: list[Hop],
        latency_s: float,
    ) -> RunResult:
        """A finished run whose totals are the sums over its hops (as the stored run row's are)."""
        return cls(
            run_id=run_id,
            graph=graph,
            question=question,
            status=status,
            answer=answer,
            error=error,
            total_cost=sum(h.cost for h in hops),
            input_tokens=sum(h.input_tokens for h in hops),
            output_tokens=sum(h.output_tokens for h in hops),
            latency_s=latency_s,
            hops=hops,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The CLI's --json object."""
        return {
            "run_id": self.run_id,
            "graph": self.graph,
            "status": self.status,
            "answer": self.answer,
            "error": self.error,
            "total_cost": self.total_cost,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_s": self.latency_s,
            "hops": [
                {
                    "node": h.node,
                    "model": h.model,
                    "sub_query": h.sub_query,
                    "input_tokens": h.input_tokens,
                    "output_tokens": h.output_tokens,
                    "cost": h.cost,
                    "latency_s": h.latency_s,
                    "error": h.error,
                }
                for h in self.hops
            ],
        }


async def drive(
    factory: sessionmaker[Session],
    runnable: Any,
    config: dict[str, Any],
    context: Any,
    graph_input: dict[str, Any] | None,
    run_id: int,
    graph: str,
    question: str,
    stored: Sequence[Hop] = (),
    *,
    on_ok: Callable[[int], object],
) -> AsyncGenerator[Hop | RunResult, None]:
    """Run a checkpointed graph (``graph_input`` None: continue its thread after the ``stored`` hops),
    storing each new hop as it arrives, then finish the run row from the final state, call ``on_ok`` with a
    finished run's id and yield the result."""
    started = time.perf_counter()
    hops = list(stored)
    seen = {hop_key(hop) for hop in hops}
    values: dict[str, Any] = {}
    status, error = "ok", None
    try:
        # "async": the next step does not wait for a step's checkpoint (on PostgreSQL its round trips
        # overlap the next model call). Resuming loses nothing by it: each node's output is saved (as the
        # step's pending writes) when the node finishes, whatever the mode, and a resume replays those
        # instead of running the node again.
        updates = runnable.astream(
            graph_input, config, context=context, stream_mode="updates", durability="async"
        )
        async with aclosing(updates):
            async for update in updates:
                # LangGraph queued the node's writes for saving as it emitted the update: let them land
                # first (one turn of the loop), so a hop is never in the store but missing from the
                # checkpoint, which a resume would answer by calling its model again.
                await asyncio.sleep(0)
                for node_update in update.values():
                    if not node_update:
                        continue
                    for hop in node_update.get("hops", []):
                        if hop_key(hop) in seen:
                            continue
                        seen.add(hop_key(hop))
                        db.add_hop(factory, run_id, len(hops), **hop_row(hop))
                        hops.append(hop)
                        yield hop
                    values.update({k: node_update[k] for k in FINAL_KEYS if k in node_update})
    except Exception as exc:  # the run fails, its hops so far stay stored, its checkpoints stay
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    except (GeneratorExit, asyncio.CancelledError):  # the caller stopped reading: not left 'running'
        db.finish_run(factory, run_id, status="failed", answer=values.get("answer", ""), error="cancelled")
        raise
    if graph_input is None:  # a resumed run: the keys set before the interruption too
        with contextlib.suppress(Exception):
            state = (await runnable.aget_state(config)).values
            values.update({k: state[k] for k in FINAL_KEYS if k in state})
    if status == "ok":
        error = values.get("error")
    answer = values.get("answer", "")
    db.finish_run(
        factory, run_id, status=status, answer=answer, error=error, trajectory=values.get("transcript")
    )
    if status == "ok":
        # The run row and its hops are the record now: a finished run's checkpoints are only weight.
        with contextlib.suppress(Exception):
            await runnable.checkpointer.adelete_thread(config["configurable"]["thread_id"])
        on_ok(run_id)
    yield RunResult.from_hops(
        run_id, graph, question, status, answer, error, list(hops), time.perf_counter() - started
    )


def hop_row(hop: Hop) -> dict[str, Any]:
    """A hop as :func:`storage.db.add_hop`'s fields."""
    row = hop.model_dump(exclude={"started_at", "detail"})
    row["detail"] = hop.detail or None
    row["started_at"] = stored_at(hop.started_at)
    return row


def hop_from_row(row: Any) -> Hop:
    """A stored hop back as the graphs' Hop (for a resumed run's result)."""
    started = row.started_at.replace(tzinfo=UTC).timestamp() if row.started_at else 0.0
    fields = {name: getattr(row, name) for name in Hop.model_fields if name not in ("started_at", "detail")}
    return Hop(**fields, started_at=started, detail=row.detail or {})


def stored_at(timestamp: float) -> datetime:
    """A hop's unix start time as the store keeps it (naive UTC)."""
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


def hop_key(hop: Hop) -> tuple[Any, ...]:
    """What tells two hops apart: the same call has the same node, model, subtask and start time."""
    return (hop.node, hop.model, hop.subtask_id, stored_at(hop.started_at))
