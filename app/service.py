"""Composition root: joins the pool, the graphs and the trace store, and runs one question.

The graphs stay pure: a run streams a graph's updates and persists each hop as it arrives
(:func:`app.runs.drive`), so a crash mid-run leaves every completed hop in the store. The read side is
:mod:`app.traces`, feedback and rewards :mod:`app.feedback`, resumability :mod:`app.resume`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import feedback, traces
from app.checkpointer import Checkpoints, thread_config
from app.config import Settings
from app.local_models import LocalServers
from app.loop import LoopThread
from app.pool import ModelEntry, Pool, load_pool
from app.provenance import graph_version, router_label, router_weights
from app.resume import ResumeError, ensure_resumable, hops_so_far, no_checkpoint, pid_alive, process_owner
from app.runs import GRAPHS, QuestionError, RunResult, drive, graph_and_context, hop_row, run_options
from app.scoring import RewardConfig
from graphs.hops import Hop
from storage import db
from storage.cache import SqlResponseCache

__all__ = [
    "GRAPHS",
    "QuestionError",
    "Readiness",
    "ResumeError",
    "RouteGraphService",
    "RunResult",
    "configured_pool",
    "router_from_checkpoint",
]
"""The embeddings (CLI, UI, server, LangChain model) import these from here, the app's one entry point."""


@dataclass(frozen=True)
class Readiness:
    """Whether the service can answer now: each pool endpoint reachable, the trace store writable."""

    endpoints: dict[str, bool]
    """Pool entry (router included) → its endpoint answered. Recorded-outcome entries have none."""
    database: str | None
    """Why the trace store cannot take a write, or None."""

    @property
    def ready(self) -> bool:
        return self.database is None and all(self.endpoints.values())

    def to_dict(self) -> dict[str, Any]:
        down = [f"model {name}: endpoint unreachable" for name, up in self.endpoints.items() if not up]
        if self.database is not None:
            down.append(f"database: {self.database}")
        return {
            "status": "ready" if self.ready else "not ready",
            "not_ready": down,
            "endpoints": self.endpoints,
            "database": "writable" if self.database is None else self.database,
        }


@dataclass
class RouteGraphService:
    """Everything needed to answer questions: settings, pool (with its servers) and the trace store."""

    settings: Settings
    pool: Pool
    servers: LocalServers | None = None
    _factory: Any = field(default=None, repr=False)
    _checkpoints: Checkpoints = field(default_factory=lambda: Checkpoints("sqlite://"), repr=False)
    _loop: LoopThread = field(default_factory=LoopThread, repr=False)

    @classmethod
    def create(
        cls, settings: Settings, *, pool: Pool | None = None, start_servers: bool = True
    ) -> RouteGraphService:
        pool = configured_pool(settings, pool)
        service = cls(settings=settings, pool=pool)
        service._factory = db.session_factory(db.make_engine(settings.database_url))
        service._checkpoints = Checkpoints(settings.database_url)
        db.mark_orphaned(service._factory, socket.gethostname(), pid_alive)
        pool.cache, pool.cache_mode = SqlResponseCache(service._factory), settings.replay
        if start_servers:
            service.start_servers()
        return service

    def start_servers(self) -> None:
        """Start the pool's embedded model servers (``create`` does, unless told not to)."""
        if self.servers is None:
            self.servers = LocalServers(self.settings)
            self.servers.start_for(self.pool)

    @property
    def sessions(self) -> Any:
        return self._factory

    def close(self) -> None:
        self._loop.stop()
        self._checkpoints.close()
        if self.servers is not None:
            self.servers.stop_all()

    def __enter__(self) -> RouteGraphService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def areadiness(self) -> Readiness:
        """Ask every pool endpoint (at once) and make a write check on the trace store that leaves nothing."""
        entries = [e for e in self.pool.all_entries() if e.backend != "recorded"]
        answers = await asyncio.gather(*(self.pool.health(e) for e in entries))
        problem = await asyncio.to_thread(db.write_problem, self._factory)
        return Readiness({e.name: up for e, up in zip(entries, answers, strict=True)}, problem)

    # -- running --------------------------------------------------------------------------------------
    async def astream(
        self,
        question: str,
        *,
        graph: str = "router-r1",
        budget_usd: float | None = None,
        max_turns: int | None = None,
    ) -> AsyncGenerator[Hop | RunResult, None]:
        """Yield each hop as the graph makes it (already stored), then the finished run.

        The graph runs as LangGraph thread ``run-<id>``, checkpointed after every super-step in the trace
        store's database, so an interrupted run can be continued with :meth:`aresume`.
        """
        if not question or not question.strip():
            raise QuestionError("the question is empty")
        if budget_usd is not None and budget_usd <= 0:
            raise QuestionError("the budget must be a positive amount of USD")
        if graph not in GRAPHS:
            raise QuestionError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")
        options = run_options(self.settings, graph, budget_usd, max_turns)
        compiled, context, extra = graph_and_context(self.settings, self.pool, graph, **options)
        async with self._checkpoints.open() as saver:
            run_id = self._open_run(question, graph, options)
            config = thread_config(db.checkpoint_thread_id(run_id), **extra)
            runnable = compiled.copy(update={"checkpointer": saver})
            # aclosing: a caller that stops reading closes the inner generator now, so the run is
            # marked 'cancelled' before the close returns (not whenever the generator is collected).
            start = {"question": question}
            run = drive(
                self._factory, runnable, config, context, start, run_id, graph, question, on_ok=self._score
            )
            async with aclosing(run):
                async for item in run:
                    yield item

    async def aresume(self, run_id: int) -> AsyncGenerator[Hop | RunResult, None]:
        """Continue an interrupted graph run from its last checkpoint, on the same run row.

        Resumable: a 'failed' run (an error, a cancelled stream, or a process that died: ``mark_orphaned``
        marks those 'interrupted') and a 'running' run whose process on this host is gone. The remaining
        hops are appended after the stored ones (a hop the checkpoint has but the store missed is stored
        first; none is stored twice) and the run finishes as a fresh one would. Raises
        :class:`ResumeError` for an unknown, finished or live run, or one without a checkpoint.
        """
        run = db.get_run(self._factory, run_id)
        ensure_resumable(run_id, run)
        assert run is not None
        stored_options = run.options or {}
        budget_usd, max_turns = stored_options.get("budget_usd"), stored_options.get("max_turns")
        options = run_options(self.settings, run.graph, budget_usd, max_turns)
        compiled, context, extra = graph_and_context(self.settings, self.pool, run.graph, **options)
        config = thread_config(db.checkpoint_thread_id(run_id), **extra)
        async with self._checkpoints.open() as saver:
            runnable = compiled.copy(update={"checkpointer": saver})
            snapshot = await runnable.aget_state(config)
            if snapshot.created_at is None:
                raise no_checkpoint(run_id, durable=self._checkpoints.durable)
            claimed = db.claim_run(
                self._factory, run_id, process_owner(), status=run.status, previous_owner=run.owner
            )
            if not claimed:
                raise ResumeError(f"run {run_id} changed while resuming it (did another process resume it?)")
            hops = hops_so_far(self._factory, run, snapshot.values.get("hops", []))
            rest = drive(
                self._factory,
                runnable,
                config,
                context,
                None,
                run_id,
                run.graph,
                run.question,
                hops,
                on_ok=self._score,
            )
            async with aclosing(rest):
                async for item in rest:
                    yield item

    def check_resumable(self, run_id: int) -> None:
        """Raise :class:`ResumeError` unless :meth:`resume` can continue this run (no model is called)."""
        ensure_resumable(run_id, db.get_run(self._factory, run_id))
        if not self._loop.run(self._checkpoints.exists(db.checkpoint_thread_id(run_id))):
            raise no_checkpoint(run_id, durable=self._checkpoints.durable)

    async def aask(self, question: str, **options: Any) -> RunResult:
        result: RunResult | None = None
        async for item in self.astream(question, **options):
            if isinstance(item, RunResult):
                result = item
        assert result is not None
        return result

    def ask(self, question: str, on_hop: Callable[[Hop], None] | None = None, **options: Any) -> RunResult:
        """Synchronous convenience for scripts and the CLI."""
        return _last(self.stream(question, **options), on_hop)

    def resume(self, run_id: int, on_hop: Callable[[Hop], None] | None = None) -> RunResult:
        """Synchronous :meth:`aresume`: continue an interrupted run and return it finished."""
        return _last(self._loop.iterate(self.aresume(run_id)), on_hop)

    def stream(self, question: str, **options: Any) -> Iterator[Hop | RunResult]:
        """Synchronous iteration over hops and the final result (Streamlit scripts run synchronously)."""
        return self._loop.iterate(self.astream(question, **options))

    def _open_run(self, question: str, graph: str, options: dict[str, Any] | None = None) -> int:
        """A new run row owned by this process: the router, its weights, the prices in force now, the graph
        code's version and the run's options."""
        return db.create_run(
            self._factory,
            question=question,
            graph=graph,
            router_model=router_label(self.pool.router),
            router_checkpoint=router_weights(self.pool.router) if graph in GRAPHS else None,
            graph_version=graph_version(graph),
            pool_snapshot=self.pool.snapshot(),
            options=options,
            owner=process_owner(),
        )

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
            db.add_hop(self._factory, run_id, index, **hop_row(hop))
        status = "failed" if error else "ok"
        db.finish_run(self._factory, run_id, status=status, answer=answer, error=error)
        total_latency = latency_s if latency_s is not None else sum(h.latency_s for h in hops)
        return RunResult.from_hops(run_id, graph, question, status, answer, error, hops, total_latency)

    # -- feedback and rewards (app.feedback) ----------------------------------------------------------
    def add_feedback(
        self, run_id: int, label: str, gold_answer: str | None = None, *, source: str = "user"
    ) -> int:
        """Record a judgement of a run (ValueError for an unknown label, run or empty gold); a gold answer
        scores the run. ``source`` says who judged: "user" (the UI, the API) or "eval" (the harness)."""
        return feedback.add_feedback(
            self._factory,
            run_id,
            label,
            gold_answer,
            source=source,
            config=self._rewards(),
            models=self.pool.names,
        )

    def score_labelled(self) -> int:
        """Score every finished run whose newest gold answer has no reward yet (after ``import-qa``)."""
        return feedback.score_labelled(self._factory, self._rewards(), self.pool.names)

    def _score(self, run_id: int) -> None:
        """Score a finished run against gold feedback that may have arrived while it ran (or was
        interrupted)."""
        feedback.score_run(self._factory, run_id, self._rewards(), self.pool.names)

    def _rewards(self) -> RewardConfig:
        return RewardConfig(alpha=self.settings.reward_alpha, metric=self.settings.reward_metric)

    # -- reading traces (app.traces) ------------------------------------------------------------------
    def list_runs(self, **filters: Any) -> Any:
        return db.list_runs(self._factory, **filters)

    def get_run(self, run_id: int) -> Any:
        return db.get_run(self._factory, run_id)

    def feedback_for(self, run_id: int) -> Any:
        return db.feedback_for(self._factory, run_id)

    def rewards_for(self, run_id: int) -> Any:
        return db.rewards_for(self._factory, run_id)

    def model_usage(self) -> list[dict[str, Any]]:
        return db.model_usage(self._factory)

    def run_rows(self, limit: int = 500, **filters: Any) -> list[dict[str, Any]]:
        return traces.run_rows(self._factory, limit, **filters)

    def export_jsonl(self, run_ids: list[int]) -> str:
        return traces.export_jsonl(self._factory, run_ids)

    def dashboard(self, limit: int = 10_000) -> dict[str, list[dict[str, Any]]]:
        return traces.dashboard(self._factory, limit)

    hop_timeline = staticmethod(traces.hop_timeline)

    def reference_cost(self, input_tokens: int, output_tokens: int) -> tuple[str, float]:
        """What these tokens would have cost on the pool's most expensive model: (name, USD)."""
        entry = self.pool.most_expensive()
        return entry.name, entry.cost(input_tokens, output_tokens)


def configured_pool(settings: Settings, pool: Pool | None = None) -> Pool:
    """The settings' pool (or ``pool``) with their timeout and router overrides applied."""
    pool = pool or load_pool(settings.pool_file)
    pool.timeout_s = settings.request_timeout_s
    if settings.router_checkpoint:
        pool = pool.with_router(router_from_checkpoint(pool.router, settings.router_checkpoint))
    if settings.router_endpoint:
        pool = pool.with_router(
            pool.router.model_copy(update={"backend": "openai", "base_url": settings.router_endpoint})
        )
    return pool


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


def _last(items: Iterator[Hop | RunResult], on_hop: Callable[[Hop], None] | None) -> RunResult:
    for item in items:
        if isinstance(item, RunResult):
            return item
        if on_hop is not None:
            on_hop(item)
    raise AssertionError("a run's stream always ends with a RunResult")
