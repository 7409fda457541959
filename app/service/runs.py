"""A graph run: the plan it runs with, the loop that streams it and stores each hop as it arrives, hops as
stored rows, and the result handed to callers.

The graphs stay pure: :func:`drive` persists every hop the moment the stream yields it, so a crash mid-run
leaves every completed hop in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from graphs.hops import Hop
from storage import db

FINAL_KEYS = ("answer", "error", "transcript")
"""State keys a graph's nodes may set that the run row keeps."""


@dataclass(frozen=True)
class RunPlan:
    """One graph run as :func:`drive` runs it: the stored row, and the graph bound to its thread."""

    run_id: int
    graph: str
    question: str
    runnable: Any
    """The compiled graph with the run's checkpointer."""
    config: dict[str, Any]
    """LangGraph run config: the run's thread (``run-<id>``) and e.g. a recursion limit."""
    context: Any
    """The graph's runtime context (pool, budget, limits)."""


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
    plan: RunPlan,
    graph_input: dict[str, Any] | None,
    stored: Sequence[Hop] = (),
    *,
    on_ok: Callable[[int], object],
) -> AsyncGenerator[Hop | RunResult, None]:
    """Run a checkpointed graph (``graph_input`` None: continue its thread after the ``stored`` hops),
    storing each new hop as it arrives, then finish the run row from the final state, call ``on_ok`` with a
    finished run's id and yield the result."""
    runnable, config, run_id = plan.runnable, plan.config, plan.run_id
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
            graph_input, config, context=plan.context, stream_mode="updates", durability="async"
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
        run_id, plan.graph, plan.question, status, answer, error, list(hops), time.perf_counter() - started
    )


def store_direct(
    factory: sessionmaker[Session],
    run_id: int,
    graph: str,
    question: str,
    hops: list[Hop],
    answer: str,
    error: str | None,
    latency_s: float | None,
) -> RunResult:
    """Store the hops of a run made of direct pool calls (no graph) on its open row and finish it: 'failed'
    with an error, else 'ok'. ``latency_s`` defaults to the hops' own."""
    for index, hop in enumerate(hops):
        db.add_hop(factory, run_id, index, **hop_row(hop))
    status = "failed" if error else "ok"
    db.finish_run(factory, run_id, status=status, answer=answer, error=error)
    total_latency = latency_s if latency_s is not None else sum(h.latency_s for h in hops)
    return RunResult.from_hops(run_id, graph, question, status, answer, error, hops, total_latency)


def final_result(items: Iterator[Hop | RunResult], on_hop: Callable[[Hop], None] | None) -> RunResult:
    """The result a run's stream ends with, each hop before it handed to ``on_hop``."""
    for item in items:
        if isinstance(item, RunResult):
            return item
        if on_hop is not None:
            on_hop(item)
    raise AssertionError("a run's stream always ends with a RunResult")


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
