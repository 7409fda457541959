"""Composition root: joins the pool, the graphs and the trace store, and runs one question.

The graphs stay pure: this module streams a graph's updates and persists each hop as it arrives, so a crash
mid-run leaves every completed hop in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app.checkpointer import Checkpoints, thread_config
from app.config import Settings
from app.local_models import LocalServers
from app.metrics import substring_match
from app.pool import ModelEntry, Pool, load_pool
from app.provenance import graph_version, router_weights
from app.scoring import SCORED_GRAPHS, RewardConfig, score_trajectory
from graphs.hops import Hop
from storage import db
from storage.cache import SqlResponseCache

FINAL_KEYS = ("answer", "error", "transcript")
"""State keys a graph's nodes may set that the run row keeps."""
GRAPHS = ("router-r1", "r2-reasoner")


class QuestionError(ValueError):
    """The question cannot be asked (empty, or an unknown graph)."""


class ResumeError(ValueError):
    """The run cannot be resumed (unknown, finished, still running, no checkpoint); the message says why."""


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
    _checkpoints: Checkpoints = field(default_factory=lambda: Checkpoints("sqlite://"), repr=False)
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
        service._checkpoints = Checkpoints(settings.database_url)
        db.mark_orphaned(service._factory, socket.gethostname(), _pid_alive)
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
    def _options(self, graph: str, budget_usd: float | None, max_turns: int | None) -> dict[str, Any]:
        """The run's options with the settings' defaults filled in: stored on the run, so a resume uses them.

        For r2-reasoner ``max_turns`` bounds the number of subtasks.
        """
        s = self.settings
        default_turns = s.r2_max_subtasks if graph == "r2-reasoner" else s.max_turns
        return {
            "budget_usd": budget_usd if budget_usd is not None else s.budget_usd,
            "max_turns": max_turns if max_turns is not None else default_turns,
        }

    def _graph_and_context(
        self, graph: str, budget_usd: float, max_turns: int
    ) -> tuple[Any, Any, dict[str, Any]]:
        """The compiled graph (no checkpointer yet), its runtime context and extra run config."""
        s = self.settings
        if graph == "router-r1":
            from graphs.router_r1.graph import graph as compiled
            from graphs.router_r1.state import RouterR1Context

            context = RouterR1Context(
                pool=self.pool,
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
                pool=self.pool,
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
        options = self._options(graph, budget_usd, max_turns)
        compiled, context, extra = self._graph_and_context(graph, **options)
        async with self._checkpoints.open() as saver:
            run_id = self._open_run(question, graph, options)
            config = thread_config(db.checkpoint_thread_id(run_id), **extra)
            runnable = compiled.copy(update={"checkpointer": saver})
            start = {"question": question}
            # aclosing: a caller that stops reading closes the inner generator now, so the run is
            # marked 'cancelled' before the close returns (not whenever the generator is collected).
            run = self._drive(runnable, config, context, start, run_id, graph, question, hops=[], seen=set())
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
        self._check_resumable(run_id, run)
        assert run is not None
        stored_options = run.options or {}
        options = self._options(run.graph, stored_options.get("budget_usd"), stored_options.get("max_turns"))
        compiled, context, extra = self._graph_and_context(run.graph, **options)
        config = thread_config(db.checkpoint_thread_id(run_id), **extra)
        async with self._checkpoints.open() as saver:
            runnable = compiled.copy(update={"checkpointer": saver})
            snapshot = await runnable.aget_state(config)
            if snapshot.created_at is None:
                raise self._no_checkpoint(run_id)
            if not db.claim_run(self._factory, run_id, _owner(), status=run.status, previous_owner=run.owner):
                raise ResumeError(f"run {run_id} changed while resuming it (did another process resume it?)")
            hops = [_hop_from_row(row) for row in run.hops]
            seen = {_row_key(row) for row in run.hops}
            for hop in snapshot.values.get("hops", []):  # checkpointed, but the process died before storing
                if _hop_key(hop) not in seen:
                    seen.add(_hop_key(hop))
                    db.add_hop(self._factory, run_id, len(hops), **_hop_row(hop))
                    hops.append(hop)
            rest = self._drive(
                runnable, config, context, None, run_id, run.graph, run.question, hops=hops, seen=seen
            )
            async with aclosing(rest):
                async for item in rest:
                    yield item

    def check_resumable(self, run_id: int) -> None:
        """Raise :class:`ResumeError` unless :meth:`resume` can continue this run (no model is called)."""
        self._check_resumable(run_id, db.get_run(self._factory, run_id))

        async def has_checkpoint() -> bool:
            async with self._checkpoints.open() as saver:
                config = thread_config(db.checkpoint_thread_id(run_id))
                return await saver.aget_tuple(config) is not None  # type: ignore[arg-type]

        if not asyncio.run_coroutine_threadsafe(has_checkpoint(), self._event_loop()).result():
            raise self._no_checkpoint(run_id)

    def _no_checkpoint(self, run_id: int) -> ResumeError:
        where = "" if self._checkpoints.durable else " (an in-memory store keeps them in its process)"
        return ResumeError(
            f"run {run_id} has no checkpoint to resume from{where}: it ran before routegraph kept "
            "checkpoints, or they were removed"
        )

    def _check_resumable(self, run_id: int, run: Any) -> None:
        if run is None:
            raise ResumeError(f"no run with id {run_id}")
        if run.graph not in GRAPHS:
            raise ResumeError(f"run {run_id} ({run.graph}) was recorded directly, not run by a graph")
        if run.status == "ok":
            raise ResumeError(f"run {run_id} already finished (status ok): nothing to resume")
        if run.status == "pending":
            raise ResumeError(f"run {run_id} is a pending dataset question that no graph ran yet: ask it")
        if run.status == "running" and run.owner:
            host, _, pid = str(run.owner).rpartition(":")
            if host != socket.gethostname():
                raise ResumeError(f"run {run_id} is running on {host}: resume it there if that process died")
            if not pid.isdigit() or _pid_alive(int(pid)):
                raise ResumeError(f"run {run_id} is still running (process {pid})")
        elif run.status not in ("failed", "running"):
            raise ResumeError(f"run {run_id} has status {run.status!r}, which cannot be resumed")

    async def _drive(
        self,
        runnable: Any,
        config: dict[str, Any],
        context: Any,
        graph_input: dict[str, Any] | None,
        run_id: int,
        graph: str,
        question: str,
        *,
        hops: list[Hop],
        seen: set[tuple[Any, ...]],
    ) -> AsyncGenerator[Hop | RunResult, None]:
        """Run a checkpointed graph (``graph_input`` None: continue its thread), storing each new hop as it
        arrives, then finish the run row from the final state and yield the result."""
        started = time.perf_counter()
        values: dict[str, Any] = {}
        status, error = "ok", None
        try:
            updates = runnable.astream(
                graph_input, config, context=context, stream_mode="updates", durability="sync"
            )
            async with aclosing(updates):
                async for update in updates:
                    for node_update in update.values():
                        if not node_update:
                            continue
                        for hop in node_update.get("hops", []):
                            if _hop_key(hop) in seen:
                                continue
                            seen.add(_hop_key(hop))
                            db.add_hop(self._factory, run_id, len(hops), **_hop_row(hop))
                            hops.append(hop)
                            yield hop
                        values.update({k: node_update[k] for k in FINAL_KEYS if k in node_update})
        except Exception as exc:  # the run fails, its hops so far stay stored, its checkpoints stay
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        except (GeneratorExit, asyncio.CancelledError):  # the caller stopped reading: not left 'running'
            db.finish_run(
                self._factory, run_id, status="failed", answer=values.get("answer", ""), error="cancelled"
            )
            raise
        with contextlib.suppress(Exception):  # resumed runs: the keys set before the interruption too
            state = (await runnable.aget_state(config)).values
            values.update({k: state[k] for k in FINAL_KEYS if k in state})
        if status == "ok":
            error = values.get("error")
        answer = values.get("answer", "")
        db.finish_run(
            self._factory,
            run_id,
            status=status,
            answer=answer,
            error=error,
            trajectory=values.get("transcript"),
        )
        if status == "ok":
            # The run row and its hops are the record now: a finished run's checkpoints are only weight.
            with contextlib.suppress(Exception):
                await runnable.checkpointer.adelete_thread(config["configurable"]["thread_id"])
            self.score_run(run_id)  # gold feedback may have arrived while it ran (or was interrupted)
        yield RunResult.from_hops(
            run_id, graph, question, status, answer, error, list(hops), time.perf_counter() - started
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
        return _last(self.stream(question, **options), on_hop)

    def resume(self, run_id: int, on_hop: Callable[[Hop], None] | None = None) -> RunResult:
        """Synchronous :meth:`aresume`: continue an interrupted run and return it finished."""
        return _last(self._sync(self.aresume(run_id)), on_hop)

    def stream(self, question: str, **options: Any) -> Iterator[Hop | RunResult]:
        """Synchronous iteration over hops and the final result (Streamlit scripts run synchronously)."""
        return self._sync(self.astream(question, **options))

    def _sync(self, agen: AsyncGenerator[Hop | RunResult, None]) -> Iterator[Hop | RunResult]:
        """Iterate an async generator of the service on its own event loop thread, so HTTP clients are
        reused across calls and several threads (Streamlit sessions) can stream at once."""
        loop = self._event_loop()
        try:
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(agen.__anext__(), loop).result()
                except StopAsyncIteration:
                    return
        finally:
            asyncio.run_coroutine_threadsafe(agen.aclose(), loop).result()

    def _open_run(self, question: str, graph: str, options: dict[str, Any] | None = None) -> int:
        """A new run row owned by this process: the router, its weights, the prices in force now, the graph
        code's version and the run's options."""
        return db.create_run(
            self._factory,
            question=question,
            graph=graph,
            router_model=_router_label(self.pool.router),
            router_checkpoint=router_weights(self.pool.router) if graph in GRAPHS else None,
            graph_version=graph_version(graph),
            pool_snapshot=self.pool.snapshot(),
            options=options,
            owner=_owner(),
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
        feedback_id = db.add_feedback(self._factory, run_id, label, gold_answer=gold_answer, source=source)
        if label == "gold":
            self.score_run(run_id)
        return feedback_id

    # -- rewards --------------------------------------------------------------------------------------
    def reward_config(self) -> RewardConfig:
        return RewardConfig(alpha=self.settings.reward_alpha, metric=self.settings.reward_metric)

    def score_run(self, run_id: int) -> int | None:
        """Store Router-R1's reward (format, outcome, cost, total) of a finished run against its newest gold
        answer; the reward row's id, or None when there is nothing to score (no gold answer, not finished,
        not a Router-R1 trajectory). The cost part is normalised against the graph's recent runs."""
        run = db.get_run(self._factory, run_id)
        if run is None or run.graph not in SCORED_GRAPHS or run.status != "ok" or not run.trajectory:
            return None
        golds = [f for f in db.feedback_for(self._factory, run_id) if f.label == "gold" and f.gold_answer]
        if not golds:
            return None
        gold = golds[-1]
        answers = list(gold.gold_aliases or [str(gold.gold_answer)])
        snapshot_models = (run.pool_snapshot or {}).get("models") or []
        models = [str(m["name"]) for m in snapshot_models] or self.pool.names
        config = self.reward_config()
        recent = db.recent_costs(
            self._factory, graph=run.graph, before_run_id=run_id, limit=config.window - 1
        )
        parts = score_trajectory(run.trajectory, answers, run.total_cost, models, config, recent)
        return db.add_reward(
            self._factory,
            run_id,
            format=parts.format,
            outcome=parts.outcome,
            cost=parts.cost,
            total=parts.total,
            reward_config={
                **config.as_dict(),
                "feedback_id": gold.id,
                "answers": answers,
                "reference_runs": len(recent),
            },
        )

    def score_labelled(self) -> int:
        """Score every finished run whose newest gold answer has no reward yet (after ``import-qa``)."""
        scored = 0
        for run_id, feedback_id in db.newest_gold_feedback(self._factory, graphs=SCORED_GRAPHS).items():
            rewards = db.rewards_for(self._factory, run_id)
            rewarded = {(r.reward_config or {}).get("feedback_id") for r in rewards}
            if feedback_id not in rewarded and self.score_run(run_id) is not None:
                scored += 1
        return scored

    def rewards_for(self, run_id: int) -> Any:
        return db.rewards_for(self._factory, run_id)

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
    row = hop.model_dump(exclude={"started_at", "detail"})
    row["detail"] = hop.detail or None
    row["started_at"] = _stored_at(hop.started_at)
    return row


def _router_label(router: ModelEntry) -> str:
    """The router's name, and the checkpoint it runs when that is not a bundled model."""
    weights = router.gguf if router.backend == "llamacpp" else router.hf_model
    bundled = weights in ("smollm2-135m", "gemma3-270m")
    return router.name if weights is None or bundled else f"{router.name} [{weights}]"


def _owner() -> str:
    """host:pid of this process, as a run's ``owner`` column holds it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _last(items: Iterator[Hop | RunResult], on_hop: Callable[[Hop], None] | None) -> RunResult:
    for item in items:
        if isinstance(item, RunResult):
            return item
        if on_hop is not None:
            on_hop(item)
    raise AssertionError("a run's stream always ends with a RunResult")


def _stored_at(timestamp: float) -> datetime:
    """A hop's unix start time as the store keeps it (naive UTC)."""
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


def _hop_key(hop: Hop) -> tuple[Any, ...]:
    """What tells two hops apart: the same call has the same node, model, subtask and start time."""
    return (hop.node, hop.model, hop.subtask_id, _stored_at(hop.started_at))


def _row_key(row: Any) -> tuple[Any, ...]:
    return (row.node, row.model, row.subtask_id, row.started_at)


def _hop_from_row(row: Any) -> Hop:
    """A stored hop back as the graphs' Hop (for a resumed run's result)."""
    started = row.started_at.replace(tzinfo=UTC).timestamp() if row.started_at else 0.0
    fields = {name: getattr(row, name) for name in Hop.model_fields if name not in ("started_at", "detail")}
    return Hop(**fields, started_at=started, detail=row.detail or {})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
