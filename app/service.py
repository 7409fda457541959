"""Composition root: joins the pool, the graphs and the trace store, and runs one question.

The graphs stay pure: this module streams a graph's updates and persists each hop as it arrives, so a crash
mid-run leaves every completed hop in the store.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from app.config import Settings
from app.local_models import LocalServers
from app.pool import Pool, load_pool
from graphs.hops import Hop
from storage import db

GRAPHS = ("router-r1",)


class QuestionError(ValueError):
    """The question cannot be asked (empty, or an unknown graph)."""


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


@dataclass
class RouteGraphService:
    """Everything needed to answer questions: settings, pool (with its servers) and the trace store."""

    settings: Settings
    pool: Pool
    servers: LocalServers | None = None
    _factory: Any = field(default=None, repr=False)

    @classmethod
    def create(
        cls, settings: Settings, *, pool: Pool | None = None, start_servers: bool = True
    ) -> RouteGraphService:
        pool = pool or load_pool(settings.pool_file)
        pool.timeout_s = settings.request_timeout_s
        if settings.router_endpoint:
            pool = pool.with_router(
                pool.router.model_copy(update={"backend": "openai", "base_url": settings.router_endpoint})
            )
        service = cls(settings=settings, pool=pool)
        service._factory = db.session_factory(db.make_engine(settings.database_url))
        db.mark_orphaned(service._factory, socket.gethostname(), _pid_alive)
        if start_servers:
            service.servers = LocalServers(settings)
            service.servers.start_for(pool)
        return service

    @property
    def sessions(self) -> Any:
        return self._factory

    def close(self) -> None:
        if self.servers is not None:
            self.servers.stop_all()

    def __enter__(self) -> RouteGraphService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running --------------------------------------------------------------------------------------
    def _graph_and_context(
        self, graph: str, budget_usd: float | None, max_turns: int | None
    ) -> tuple[Any, Any]:
        s = self.settings
        if graph == "router-r1":
            from graphs.router_r1.graph import graph as compiled
            from graphs.router_r1.state import RouterR1Context

            return compiled, RouterR1Context(
                pool=self.pool,
                budget_usd=budget_usd if budget_usd is not None else s.budget_usd,
                max_turns=max_turns if max_turns is not None else s.max_turns,
                response_max_tokens=s.response_max_tokens,
                router_max_tokens=s.router_max_tokens,
                min_routes=s.min_routes,
            )
        raise QuestionError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")

    async def astream(
        self,
        question: str,
        *,
        graph: str = "router-r1",
        budget_usd: float | None = None,
        max_turns: int | None = None,
    ) -> AsyncGenerator[Hop | RunResult, None]:
        """Yield each hop as the graph makes it (already stored), then the finished run."""
        if not question or not question.strip():
            raise QuestionError("the question is empty")
        if budget_usd is not None and budget_usd <= 0:
            raise QuestionError("the budget must be a positive amount of USD")
        compiled, context = self._graph_and_context(graph, budget_usd, max_turns)
        started = time.perf_counter()
        run_id = db.create_run(
            self._factory,
            question=question,
            graph=graph,
            router_model=self.pool.router.name,
            pool_snapshot=self.pool.snapshot(),
            owner=f"{socket.gethostname()}:{os.getpid()}",
        )
        hops: list[Hop] = []
        final: dict[str, Any] = {}
        status, error = "ok", None
        try:
            async for update in compiled.astream(
                {"question": question}, context=context, stream_mode="updates"
            ):
                for node_update in update.values():
                    if not node_update:
                        continue
                    for hop in node_update.get("hops", []):
                        db.add_hop(self._factory, run_id, len(hops), **_hop_row(hop))
                        hops.append(hop)
                        yield hop
                    final.update({k: node_update[k] for k in ("answer", "error") if k in node_update})
            error = final.get("error")
        except Exception as exc:  # the run fails, its hops so far stay stored
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        answer = final.get("answer", "")
        db.finish_run(self._factory, run_id, status=status, answer=answer, error=error)
        yield RunResult(
            run_id=run_id,
            graph=graph,
            question=question,
            status=status,
            answer=answer,
            error=error,
            total_cost=sum(h.cost for h in hops),
            input_tokens=sum(h.input_tokens for h in hops),
            output_tokens=sum(h.output_tokens for h in hops),
            latency_s=time.perf_counter() - started,
            hops=hops,
        )

    async def aask(self, question: str, **options: Any) -> RunResult:
        result: RunResult | None = None
        async for item in self.astream(question, **options):
            if isinstance(item, RunResult):
                result = item
        assert result is not None
        return result

    def ask(self, question: str, on_hop: Callable[[Hop], None] | None = None, **options: Any) -> RunResult:
        """Synchronous convenience for scripts and the CLI."""

        async def _collect() -> RunResult:
            result: RunResult | None = None
            async for item in self.astream(question, **options):
                if isinstance(item, RunResult):
                    result = item
                elif on_hop is not None:
                    on_hop(item)
            assert result is not None
            return result

        return asyncio.run(_collect())

    def stream(self, question: str, **options: Any) -> Iterator[Hop | RunResult]:
        """Synchronous iteration over hops and the final result (Streamlit runs scripts synchronously)."""
        loop = asyncio.new_event_loop()
        agen = self.astream(question, **options)
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()

    # -- reading traces -------------------------------------------------------------------------------
    def list_runs(self, **filters: Any) -> Any:
        return db.list_runs(self._factory, **filters)

    def get_run(self, run_id: int) -> Any:
        return db.get_run(self._factory, run_id)


def _hop_row(hop: Hop) -> dict[str, Any]:
    from datetime import UTC, datetime

    row = hop.model_dump(exclude={"started_at", "detail"})
    row["detail"] = hop.detail or None
    row["started_at"] = datetime.fromtimestamp(hop.started_at, UTC).replace(tzinfo=None)
    return row


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
