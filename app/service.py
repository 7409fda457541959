"""Composition root: joins the pool, the graphs and the trace store, and runs one question.

The graphs stay pure: this module streams a graph's updates and persists each hop as it arrives, so a crash
mid-run leaves every completed hop in the store.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app.config import Settings
from app.local_models import LocalServers
from app.metrics import substring_match
from app.pool import ModelEntry, Pool, load_pool
from graphs.hops import Hop
from storage import db
from storage.cache import SqlResponseCache

FINAL_KEYS = ("answer", "error", "transcript")
"""State keys a graph's nodes may set that the run row keeps."""
GRAPHS = ("router-r1", "r2-reasoner")


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


@dataclass
class RouteGraphService:
    """Everything needed to answer questions: settings, pool (with its servers) and the trace store."""

    settings: Settings
    pool: Pool
    servers: LocalServers | None = None
    _factory: Any = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _loop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(
        cls, settings: Settings, *, pool: Pool | None = None, start_servers: bool = True
    ) -> RouteGraphService:
        pool = pool or load_pool(settings.pool_file)
        pool.timeout_s = settings.request_timeout_s
        if settings.router_checkpoint:
            pool = pool.with_router(router_from_checkpoint(pool.router, settings.router_checkpoint))
        if settings.router_endpoint:
            pool = pool.with_router(
                pool.router.model_copy(update={"backend": "openai", "base_url": settings.router_endpoint})
            )
        service = cls(settings=settings, pool=pool)
        service._factory = db.session_factory(db.make_engine(settings.database_url))
        db.mark_orphaned(service._factory, socket.gethostname(), _pid_alive)
        pool.cache, pool.cache_mode = SqlResponseCache(service._factory), settings.replay
        if start_servers:
            service.servers = LocalServers(settings)
            service.servers.start_for(pool)
        return service

    @property
    def sessions(self) -> Any:
        return self._factory

    def close(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None
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
        if graph == "r2-reasoner":
            from graphs.r2_reasoner.graph import graph as r2_graph
            from graphs.r2_reasoner.graph import recursion_limit
            from graphs.r2_reasoner.state import R2Context

            # For this graph --max-turns bounds the number of subtasks.
            max_subtasks = max_turns if max_turns is not None else s.r2_max_subtasks
            return r2_graph.with_config(recursion_limit=recursion_limit(max_subtasks)), R2Context(
                pool=self.pool,
                budget_usd=budget_usd if budget_usd is not None else s.budget_usd,
                max_subtasks=max_subtasks,
                allocation=s.r2_allocation,
                escalate=s.r2_escalate,
                aggregator=s.r2_aggregator,
                response_max_tokens=s.response_max_tokens,
                router_max_tokens=s.router_max_tokens,
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
        run_id = self._open_run(question, graph)
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
                    final.update({k: node_update[k] for k in FINAL_KEYS if k in node_update})
            error = final.get("error")
        except Exception as exc:  # the run fails, its hops so far stay stored
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        except (GeneratorExit, asyncio.CancelledError):  # the caller stopped reading: not left 'running'
            db.finish_run(
                self._factory, run_id, status="failed", answer=final.get("answer", ""), error="cancelled"
            )
            raise
        answer = final.get("answer", "")
        db.finish_run(
            self._factory,
            run_id,
            status=status,
            answer=answer,
            error=error,
            trajectory=final.get("transcript"),
        )
        yield RunResult.from_hops(
            run_id, graph, question, status, answer, error, hops, time.perf_counter() - started
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
        for item in self.stream(question, **options):
            if isinstance(item, RunResult):
                return item
            if on_hop is not None:
                on_hop(item)
        raise AssertionError("astream always ends with a RunResult")

    def stream(self, question: str, **options: Any) -> Iterator[Hop | RunResult]:
        """Synchronous iteration over hops and the final result (Streamlit scripts run synchronously).

        Runs on the service's own event loop thread, so HTTP clients are reused across calls and several
        threads (Streamlit sessions) can stream at once.
        """
        loop = self._event_loop()
        agen = self.astream(question, **options)
        try:
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(agen.__anext__(), loop).result()
                except StopAsyncIteration:
                    return
        finally:
            asyncio.run_coroutine_threadsafe(agen.aclose(), loop).result()

    def _open_run(self, question: str, graph: str) -> int:
        """A new run row owned by this process, with the router and the prices in force now."""
        return db.create_run(
            self._factory,
            question=question,
            graph=graph,
            router_model=_router_label(self.pool.router),
            pool_snapshot=self.pool.snapshot(),
            owner=f"{socket.gethostname()}:{os.getpid()}",
        )

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="routegraph-loop", daemon=True).start()
            return self._loop

    def record_direct(
        self,
        question: str,
        *,
        graph: str,
        hops: list[Hop],
        answer: str,
        error: str | None = None,
        latency_s: float | None = None,
    ) -> RunResult:
        """Store a run made of direct pool calls (an evaluation baseline, not a graph) and return it.

        ``graph`` labels the method (e.g. ``single:Gemma-3-270M``); a run with an error is ``failed``.
        """
        run_id = self._open_run(question, graph)
        for index, hop in enumerate(hops):
            db.add_hop(self._factory, run_id, index, **_hop_row(hop))
        status = "failed" if error else "ok"
        db.finish_run(self._factory, run_id, status=status, answer=answer, error=error)
        total_latency = latency_s if latency_s is not None else sum(h.latency_s for h in hops)
        return RunResult.from_hops(run_id, graph, question, status, answer, error, hops, total_latency)

    # -- reading traces -------------------------------------------------------------------------------
    def list_runs(self, **filters: Any) -> Any:
        return db.list_runs(self._factory, **filters)

    def get_run(self, run_id: int) -> Any:
        return db.get_run(self._factory, run_id)

    # -- feedback and the views the UI draws ----------------------------------------------------------
    def add_feedback(
        self, run_id: int, label: str, gold_answer: str | None = None, *, source: str = "user"
    ) -> int:
        """Record a judgement of a run (ValueError for an unknown label, run or empty gold).

        ``source`` says who judged: "user" (the UI, the API) or "eval" (the evaluation harness).
        """
        return db.add_feedback(self._factory, run_id, label, gold_answer=gold_answer, source=source)

    def feedback_for(self, run_id: int) -> Any:
        return db.feedback_for(self._factory, run_id)

    def model_usage(self) -> list[dict[str, Any]]:
        return db.model_usage(self._factory)

    def reference_cost(self, input_tokens: int, output_tokens: int) -> tuple[str, float]:
        """What these tokens would have cost on the pool's most expensive model: (name, USD)."""
        entry = self.pool.most_expensive()
        return entry.name, entry.cost(input_tokens, output_tokens)

    def run_rows(self, limit: int = 500, **filters: Any) -> list[dict[str, Any]]:
        """Stored runs as flat table rows, with their latest feedback judged against the answer."""
        labels = db.latest_feedback(self._factory)
        rows = []
        for run in db.list_runs(self._factory, limit=limit, **filters):
            rows.append(
                {
                    "id": run.id,
                    "created_at": run.created_at,
                    "graph": run.graph,
                    "status": run.status,
                    "question": run.question,
                    "answer": run.answer,
                    "total_cost": run.total_cost,
                    "input_tokens": run.input_tokens,
                    "output_tokens": run.output_tokens,
                    "latency_s": run.latency_s,
                    "error": run.error,
                    "correct": judge(run.answer, labels.get(run.id)),
                }
            )
        return rows

    def export_jsonl(self, run_ids: list[int]) -> str:
        """The runs with their hops and feedback, one JSON object a line."""
        lines = []
        for run_id in run_ids:
            run = self.get_run(run_id)
            if run is None:
                continue
            data = {c.name: getattr(run, c.name) for c in run.__table__.columns}
            data["hops"] = [{c.name: getattr(h, c.name) for c in h.__table__.columns} for h in run.hops]
            data["feedback"] = [
                {c.name: getattr(f, c.name) for c in f.__table__.columns} for f in self.feedback_for(run_id)
            ]
            lines.append(json.dumps(data, default=_json_default))
        return "\n".join(lines) + ("\n" if lines else "")

    @staticmethod
    def hop_timeline(run: Any) -> list[dict[str, Any]]:
        """One bar per stored hop: start, end (start + latency) and what to colour and label it by."""
        rows = []
        for hop in run.hops:
            start = hop.started_at or run.created_at
            rows.append(
                {
                    "hop": f"{hop.index} {hop.node}",
                    "model": hop.model or "(none)",
                    "start": start,
                    "end": start + timedelta(seconds=max(hop.latency_s, 0.001)),
                    "cost": hop.cost,
                    "error": hop.error,
                }
            )
        return rows

    def dashboard(self, limit: int = 10_000) -> dict[str, list[dict[str, Any]]]:
        """Daily runs and cost, cost and accuracy per graph, and the share of hops per model."""
        rows = self.run_rows(limit=limit)
        daily: dict[tuple[Any, str], dict[str, Any]] = {}
        graphs: dict[str, dict[str, Any]] = {}
        for row in rows:
            day = daily.setdefault(
                (row["created_at"].date(), row["graph"]),
                {"day": row["created_at"].date(), "graph": row["graph"], "runs": 0, "cost": 0.0},
            )
            day["runs"] += 1
            day["cost"] += row["total_cost"]
            per = graphs.setdefault(
                row["graph"], {"graph": row["graph"], "runs": 0, "cost": 0.0, "judged": 0}
            )
            per["runs"] += 1
            per["cost"] += row["total_cost"]
            per.setdefault("right", 0)
            if row["correct"] is not None:
                per["judged"] += 1
                per["right"] += int(row["correct"])
        by_graph = [
            {
                "graph": g["graph"],
                "runs": g["runs"],
                "mean_cost": g["cost"] / g["runs"],
                "judged": g["judged"],
                "accuracy": g["right"] / g["judged"] if g["judged"] else None,
            }
            for g in graphs.values()
        ]
        usage = self.model_usage()
        calls = sum(u["calls"] for u in usage) or 1
        routes = [{"model": u["model"], "hops": u["calls"], "share": u["calls"] / calls} for u in usage]
        return {
            "daily": sorted(daily.values(), key=lambda d: d["day"]),
            "by_graph": by_graph,
            "routes": routes,
        }


def judge(answer: str | None, feedback: Any) -> bool | None:
    """Whether feedback says the answer is right: a label, or the gold answer (SQuAD-normalised) within it."""
    if feedback is None:
        return None
    if feedback.label == "gold":
        return bool(substring_match(answer or "", [feedback.gold_answer or ""]))
    return bool(feedback.label == "correct")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def router_from_checkpoint(router: ModelEntry, checkpoint: str) -> ModelEntry:
    """The pool's router entry pointed at a trained checkpoint: GGUF on llama.cpp, else vLLM."""
    path = Path(checkpoint).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise QuestionError(f"router checkpoint {path} does not exist")
        changes: dict[str, Any] = {"backend": "llamacpp", "gguf": str(path.resolve()), "hf_model": None}
    else:
        changes = {"backend": "vllm", "hf_model": str(path.resolve()) if path.exists() else checkpoint}
    return router.model_copy(update={**changes, "base_url": None, "model_id": None})


def _hop_row(hop: Hop) -> dict[str, Any]:
    from datetime import UTC, datetime

    row = hop.model_dump(exclude={"started_at", "detail"})
    row["detail"] = hop.detail or None
    row["started_at"] = datetime.fromtimestamp(hop.started_at, UTC).replace(tzinfo=None)
    return row


def _router_label(router: ModelEntry) -> str:
    """The router's name, and the checkpoint it runs when that is not a bundled model."""
    weights = router.gguf if router.backend == "llamacpp" else router.hf_model
    bundled = weights in ("smollm2-135m", "gemma3-270m")
    return router.name if weights is None or bundled else f"{router.name} [{weights}]"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
