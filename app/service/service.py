"""The service: one object that answers questions with a graph over the pool and keeps every run in the
trace store. Runs stream a graph's updates and persist each hop as it arrives
(:func:`app.service.runs.drive`), so a crash mid-run leaves every completed hop in the store; interrupted
runs resume (:mod:`app.service.resume`); feedback scores runs (:mod:`app.service.feedback`); the read side is
:mod:`app.service.traces`. Entry points reach the pool and the store only through this class.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.config import Settings
from app.pool import CallResult, ModelEntry, Pool, configured_pool
from app.pool.circuit import ModelDownError
from app.pool.local_servers import LocalServers
from app.service import admission, feedback, traces
from app.service.checkpointer import Checkpoints, thread_config
from app.service.loop import LoopThread
from app.service.provenance import graph_version, pool_view, router_label, router_weights
from app.service.readiness import Readiness, endpoint_health, readiness
from app.service.registry import REGISTRY, RunOptions, graph_spec, run_options
from app.service.resume import (
    ResumeError,
    ensure_resumable,
    hops_so_far,
    no_checkpoint,
    pid_alive,
    process_owner,
)
from app.service.runs import RunPlan, RunResult, drive, final_result, store_direct
from graphs.hops import Hop
from graphs.router_r1.rewards import RewardConfig
from storage import datasets, db, maintenance
from storage.cache import SqlResponseCache
from storage.models import utcnow


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
        cls,
        settings: Settings,
        *,
        pool: Pool | None = None,
        start_servers: bool = True,
        read_only: bool = False,
    ) -> RouteGraphService:
        """The service over the settings' pool and trace store.

        ``read_only``: the caller only reads the store (listing, showing, exporting runs), which is then
        opened without migrating or writing anything, so a store this user cannot write still reads.
        """
        pool = configured_pool(settings, pool)
        service = cls(settings=settings, pool=pool)
        engine = db.make_engine(settings.database_url, read_only=read_only)
        service._factory = db.session_factory(engine)
        service._checkpoints = Checkpoints(settings.database_url)
        if not read_only:
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
        return await readiness(self.pool, self._factory)

    # -- running ---------------------------------------------------------------------------------------------
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
        options = self.check_question(question, graph, budget_usd, max_turns)
        async with self._checkpoints.open() as saver:
            run_id = self._open_run(question, graph, options)
            plan = self._plan(run_id, graph, question, options, saver)
            # aclosing: a caller that stops reading closes the inner generator now, so the run is
            # marked 'cancelled' before the close returns (not whenever the generator is collected).
            run = drive(self._factory, plan, {"question": question}, on_ok=self._score)
            async with aclosing(run):
                async for item in run:
                    yield item

    def check_question(
        self, question: str, graph: str, budget_usd: float | None = None, max_turns: int | None = None
    ) -> RunOptions:
        """The run's options, or the :class:`QuestionError` a run would meet before any model call."""
        return admission.check_question(self.settings, self.pool, question, graph, budget_usd, max_turns)

    def outage(self, target: str) -> ModelDownError | None:
        """Why a request for ``target`` (a graph: its router; a pool model) would fail now."""
        return admission.outage(self.pool, target)

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
        stored = run.options or {}
        options = run_options(self.settings, run.graph, stored.get("budget_usd"), stored.get("max_turns"))
        async with self._checkpoints.open() as saver:
            plan = self._plan(run_id, run.graph, run.question, options, saver)
            snapshot = await plan.runnable.aget_state(plan.config)
            if snapshot.created_at is None:
                raise no_checkpoint(run_id, durable=self._checkpoints.durable)
            claimed = db.claim_run(
                self._factory, run_id, process_owner(), status=run.status, previous_owner=run.owner
            )
            if not claimed:
                raise ResumeError(f"run {run_id} changed while resuming it (did another process resume it?)")
            hops = hops_so_far(self._factory, run, snapshot.values.get("hops", []))
            rest = drive(self._factory, plan, None, hops, on_ok=self._score)
            async with aclosing(rest):
                async for item in rest:
                    yield item

    def _plan(self, run_id: int, graph: str, question: str, options: RunOptions, saver: Any) -> RunPlan:
        """The graph bound to the run's thread, checkpointer and runtime context."""
        compiled, context, extra = graph_spec(graph).bind(self.settings, self.pool, options)
        return RunPlan(
            run_id=run_id,
            graph=graph,
            question=question,
            runnable=compiled.copy(update={"checkpointer": saver}),
            config=thread_config(db.checkpoint_thread_id(run_id), **extra),
            context=context,
        )

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
        return final_result(self.stream(question, **options), on_hop)

    def resume(self, run_id: int, on_hop: Callable[[Hop], None] | None = None) -> RunResult:
        """Synchronous :meth:`aresume`: continue an interrupted run and return it finished."""
        return final_result(self._loop.iterate(self.aresume(run_id)), on_hop)

    def stream(self, question: str, **options: Any) -> Iterator[Hop | RunResult]:
        """Synchronous iteration over hops and the final result (Streamlit scripts run synchronously)."""
        return self._loop.iterate(self.astream(question, **options))

    def _open_run(self, question: str, graph: str, options: RunOptions | None = None) -> int:
        """A new run row owned by this process: the router, its weights, the prices in force now, the graph
        code's version and the run's options."""
        return db.create_run(
            self._factory,
            question=question,
            graph=graph,
            router_model=router_label(self.pool.router),
            router_checkpoint=router_weights(self.pool.router) if graph in REGISTRY else None,
            graph_version=graph_version(graph),
            pool_snapshot=self.pool.snapshot(),
            options=options.as_dict() if options else None,
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
        return store_direct(self._factory, run_id, graph, question, hops, answer, error, latency_s)

    # -- feedback and rewards (app.service.feedback) ---------------------------------------------------------
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

    # -- the trace store, read and kept (app.service.traces, storage) ----------------------------------------
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

    def records(self, **filters: Any) -> list[dict[str, Any]]:
        """Finished and pending runs as plain records with their gold answers (training rows' source)."""
        return datasets.records(self._factory, **filters)

    def import_qa(self, rows: list[dict[str, Any]], *, graph: str) -> datasets.ImportResult:
        """Store labelled QA rows as gold feedback (new questions become pending runs of ``graph``)."""
        graph_spec(graph)
        return datasets.import_qa(self._factory, rows, graph=graph)

    def prune(self, older_than: timedelta, *, keep_labelled: bool) -> tuple[int, datetime]:
        """Delete runs created more than ``older_than`` ago: (how many, the cutoff in UTC)."""
        cutoff = utcnow() - older_than
        return maintenance.prune(self._factory, cutoff, keep_labelled=keep_labelled), cutoff

    def size_report(self) -> dict[str, Any]:
        return maintenance.size_report(db.engine_of(self._factory))

    # -- the pool, as entry points see it --------------------------------------------------------------------
    @property
    def models(self) -> Sequence[ModelEntry]:
        """The candidate models (not the router)."""
        return self.pool.models

    def find_model(self, name: str) -> ModelEntry | None:
        return self.pool.find(name)

    def pool_view(self) -> dict[str, Any]:
        """What the pool is, for people: its file, the router, its weights, the training run that produced
        them (``trained_by``, None for weights no stored training run made) and every entry."""
        view = pool_view(self.pool)
        return {**view, "trained_by": traces.trained_by(self._factory, view["router_weights"])}

    async def pool_health(self) -> dict[str, bool]:
        """Whether each entry's endpoint answers now (router and candidates)."""
        return await endpoint_health(self.pool)

    async def call_model(
        self, name: str, messages: Sequence[tuple[str, str]], *, max_tokens: int | None = None
    ) -> CallResult:
        """One pool model answers a conversation directly (no graph, nothing stored); a base model gets the
        last user turn through its few-shot template."""
        entry, cap = self.check_call(name, messages, max_tokens=max_tokens)
        if entry.mode == "completion":
            question = next((text for role, text in reversed(messages) if role == "human"), "")
            return await self.pool.ask(entry.name, question, max_tokens=cap)
        return await self.pool.chat(entry, messages, max_tokens=cap)

    def check_call(
        self, name: str, messages: Sequence[tuple[str, str]], *, max_tokens: int | None = None
    ) -> tuple[ModelEntry, int]:
        """The entry and reply cap of a direct call, or ``ContextLengthError`` when it cannot fit."""
        return admission.check_call(self.settings, self.pool, name, messages, max_tokens)

    def reference_cost(self, input_tokens: int, output_tokens: int) -> tuple[str, float]:
        """What these tokens would have cost on the pool's most expensive model: (name, USD)."""
        entry = self.pool.most_expensive()
        return entry.name, entry.cost(input_tokens, output_tokens)
