"""Resuming interrupted runs from their LangGraph checkpoints (kept in the trace store's database)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import BaseMessage
from sqlalchemy import delete, update

from app.config import Settings
from app.pool import Pool
from app.service import ResumeError, RouteGraphService, RunResult
from graphs.hops import Hop
from storage import db, maintenance
from storage.models import Hop as HopRow
from storage.models import Run, utcnow
from tests.fakes import ROUTER, SMALL, fake, make_fake_pool, message_text, think_answer, think_route

QUESTION = "What is the capital of France?"
DEAD_OWNER = f"{socket.gethostname()}:{2**22 + 12345}"  # a pid above the default pid_max: never alive
DOWN = httpx.ConnectError("[Errno 111] Connection refused")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/t.db")


def make_service(settings: Settings, pool: Pool) -> RouteGraphService:
    return RouteGraphService.create(settings, pool=pool, start_servers=False)


def failing_on_second_think() -> Pool:
    """think → route → (router down) ... then, once resumed, think → answer."""
    return make_fake_pool(
        {ROUTER: [think_route(SMALL, "capital of France?"), DOWN, think_answer("Paris")], SMALL: ["Paris."]}
    )


def checkpoint_threads(settings: Settings) -> list[str]:
    path = settings.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT DISTINCT thread_id FROM checkpoints")]


def assert_complete(service: RouteGraphService, result: RunResult, nodes: list[str]) -> None:
    """Status ok, every hop stored once in order, the run's totals the sums over its hops."""
    run = service.get_run(result.run_id)
    assert run is not None
    assert (run.status, run.error, run.answer) == ("ok", None, result.answer)
    assert run.finished_at is not None
    assert [h.index for h in run.hops] == list(range(len(nodes)))
    assert [h.node for h in run.hops] == [h.node for h in result.hops] == nodes
    assert len({(h.node, h.started_at) for h in run.hops}) == len(nodes)
    assert run.total_cost == pytest.approx(sum(h.cost for h in run.hops)) == result.total_cost
    assert run.input_tokens == sum(h.input_tokens for h in run.hops) == result.input_tokens
    assert run.output_tokens == sum(h.output_tokens for h in run.hops) == result.output_tokens
    assert run.total_cost > 0


def same_hops(stored: list[Hop], made: list[Hop]) -> bool:
    """Hops equal up to the store's microsecond start times."""
    return [h.model_dump(exclude={"started_at"}) for h in stored] == [
        h.model_dump(exclude={"started_at"}) for h in made
    ] and all(abs(a.started_at - b.started_at) < 1e-5 for a, b in zip(stored, made, strict=True))


def test_failed_run_resumes_from_its_last_step_on_the_same_row(settings: Settings) -> None:
    pool = failing_on_second_think()
    with make_service(settings, pool) as service:
        failed = service.ask(QUESTION)
        assert failed.status == "failed" and [h.node for h in failed.hops] == ["think", "route"]
        assert checkpoint_threads(settings) == [f"run-{failed.run_id}"]

        seen: list[Hop] = []
        result = service.resume(failed.run_id, on_hop=seen.append)

        assert result.run_id == failed.run_id and (result.status, result.answer) == ("ok", "Paris")
        assert [h.node for h in seen] == ["think"]  # only the new hop streams
        assert_complete(service, result, ["think", "route", "think"])
        assert same_hops(result.hops[:2], failed.hops)
        # Completed steps were not re-run: one routed call, three router calls (one of them the failure).
        assert len(fake(pool, SMALL).calls) == 1 and len(fake(pool, ROUTER).calls) == 3
        assert len(service.list_runs()) == 1
        run = service.get_run(result.run_id)
        assert run is not None and run.trajectory and run.trajectory.endswith("</answer>")
        assert checkpoint_threads(settings) == []  # a finished run's checkpoints are dropped

        with pytest.raises(ResumeError, match="already finished"):
            service.resume(result.run_id)


def test_run_of_a_dead_process_is_marked_interrupted_and_resumes_in_another(settings: Settings) -> None:
    pool = failing_on_second_think()
    with make_service(settings, pool) as service:
        run_id = service.ask(QUESTION).run_id
        # As a process killed mid-run leaves it: still 'running', owned by a pid that no longer exists.
        with db.session_scope(service.sessions) as session:
            session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(status="running", error=None, finished_at=None, owner=DEAD_OWNER)
            )

    with make_service(settings, pool) as later:
        orphan = later.get_run(run_id)
        assert orphan is not None and orphan.status == "failed"
        assert orphan.error is not None and orphan.error.startswith("interrupted")
        result = later.resume(run_id)
        assert_complete(later, result, ["think", "route", "think"])
        run = later.get_run(run_id)
        assert run is not None and run.owner == f"{socket.gethostname()}:{os.getpid()}"


def test_running_run_of_a_dead_process_resumes_without_a_restart(settings: Settings) -> None:
    pool = failing_on_second_think()
    with make_service(settings, pool) as service:
        run_id = service.ask(QUESTION).run_id
        with db.session_scope(service.sessions) as session:
            session.execute(update(Run).where(Run.id == run_id).values(status="running", owner=DEAD_OWNER))
        assert_complete(service, service.resume(run_id), ["think", "route", "think"])


def test_a_hop_is_stored_only_once_its_node_output_is_checkpointed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What resume relies on: a process killed after a hop was stored finds that node's output in the
    # checkpoint, so the node (and its model) never runs twice for one stored hop.
    path = settings.database_url.split("///", 1)[1]
    checkpointed_hops: list[tuple[str, int]] = []
    add_hop = db.add_hop

    def add_hop_after_checking(factory: Any, run_id: int, index: int, **fields: Any) -> None:
        with sqlite3.connect(path) as connection:
            query = "SELECT COUNT(*) FROM writes WHERE thread_id = ? AND channel = 'hops'"
            (count,) = connection.execute(query, (db.checkpoint_thread_id(run_id),)).fetchone()
        checkpointed_hops.append((fields["node"], count))
        add_hop(factory, run_id, index, **fields)

    monkeypatch.setattr(db, "add_hop", add_hop_after_checking)
    pool = make_fake_pool(
        {ROUTER: [think_route(SMALL, "capital of France?"), think_answer("Paris")], SMALL: ["Paris."]}
    )
    with make_service(settings, pool) as service:
        service.ask(QUESTION)
    # The k-th hop is stored when the checkpoint already holds the writes of k nodes that made hops.
    assert checkpointed_hops == [("think", 1), ("route", 2), ("think", 3)]


def test_abandoned_stream_resumes(settings: Settings) -> None:
    pool = failing_on_second_think()
    fake(pool, ROUTER).replies.remove(DOWN)
    small = fake(pool, SMALL)
    small.delay_s, small.replies = 60, ["Paris.", "Paris."]  # the close lands in the first call
    with make_service(settings, pool) as service:
        stream = service.stream(QUESTION)
        first = next(stream)
        assert isinstance(first, Hop) and first.node == "think"
        deadline = time.monotonic() + 10
        while not small.calls and time.monotonic() < deadline:  # the run goes on: wait until it calls
            time.sleep(0.01)
        stream.close()  # type: ignore[attr-defined]
        run = service.list_runs(limit=1)[0]
        assert (run.status, run.error) == ("failed", "cancelled")
        small.delay_s = 0
        result = service.resume(run.id)
        assert_complete(service, result, ["think", "route", "think"])
        # The router's stored step is not asked again; the call the close cut off is made again.
        assert len(fake(pool, ROUTER).calls) == 2 and len(small.calls) == 2


def test_hop_checkpointed_but_not_stored_is_stored_once(settings: Settings) -> None:
    pool = failing_on_second_think()
    with make_service(settings, pool) as service:
        failed = service.ask(QUESTION)
        route = failed.hops[1]
        # The process died after LangGraph saved the route step but before the service stored its hop.
        with db.session_scope(service.sessions) as session:
            session.execute(delete(HopRow).where(HopRow.run_id == failed.run_id, HopRow.index == 1))
            session.execute(
                update(Run)
                .where(Run.id == failed.run_id)
                .values(
                    total_cost=Run.total_cost - route.cost,
                    input_tokens=Run.input_tokens - route.input_tokens,
                    output_tokens=Run.output_tokens - route.output_tokens,
                )
            )
        result = service.resume(failed.run_id)
        assert_complete(service, result, ["think", "route", "think"])
        assert same_hops([result.hops[1]], [route])
        assert len(fake(pool, SMALL).calls) == 1  # restored from the checkpoint, not asked again


def plan(*items: tuple[str, str, list[str]]) -> str:
    return json.dumps({"subtasks": [{"id": i, "text": t, "depends_on": d} for i, t, d in items]})


def by_content(answers: dict[str, str]) -> Callable[[list[BaseMessage]], str]:
    def reply(messages: list[BaseMessage]) -> str:
        text = message_text(messages[-1])
        return next((a for key, a in answers.items() if key in text), "?")

    return reply


def test_r2_reasoner_run_resumes(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", r2_allocation="cheapest")
    two = plan(("1", "What is 2+3?", []), ("2", "Add 4 to it.", ["1"]))
    small = by_content({"Now answer: What is 2+3+4": "Answer: 9", "Add 4": "9", "2+3": "5"})
    pool = make_fake_pool({ROUTER: [two], SMALL: [small] * 3})
    with make_service(settings, pool) as service:
        stream = service.stream("What is 2+3+4?", graph="r2-reasoner")
        first = next(stream)
        assert isinstance(first, Hop) and first.node == "decompose"
        stream.close()  # type: ignore[attr-defined]
        run_id = service.list_runs(limit=1)[0].id
        result = service.resume(run_id)
        assert result.answer == "9"
        assert_complete(service, result, ["decompose", "allocate", "execute", "execute", "execute"])
        assert [h.subtask_id for h in result.hops if h.node == "execute"] == ["1", "2", "3"]
        assert len(fake(pool, ROUTER).calls) == 1 and len(fake(pool, SMALL).calls) == 3


def test_budget_and_turns_of_the_run_apply_when_it_resumes(settings: Settings) -> None:
    pool = make_fake_pool(
        {ROUTER: [think_route(SMALL, "a?"), DOWN, think_route(SMALL, "b?"), "Paris"], SMALL: ["x", "y"]}
    )
    with make_service(settings, pool) as service:
        failed = service.ask(QUESTION, max_turns=1, budget_usd=0.5)
        run = service.get_run(failed.run_id)
        assert run is not None and run.options == {"budget_usd": 0.5, "max_turns": 1}
        result = service.resume(failed.run_id)
    # One route allowed: the second route action is turned into a forced answer.
    assert [h.node for h in result.hops] == ["think", "route", "think", "answer"]
    assert result.answer == "Paris"


def test_resume_refusals(settings: Settings) -> None:
    pool = make_fake_pool({ROUTER: [think_answer("Paris")]})
    with make_service(settings, pool) as service:
        with pytest.raises(ResumeError, match="no run with id 99"):
            service.resume(99)
        factory = service.sessions
        no_checkpoint = db.create_run(factory, question="q", graph="router-r1", status="failed")
        with pytest.raises(ResumeError, match=f"run {no_checkpoint} has no checkpoint"):
            service.resume(no_checkpoint)
        live = db.create_run(factory, question="q", graph="router-r1", owner=f"{socket.gethostname()}:1")
        with pytest.raises(ResumeError, match="still running"):
            service.resume(live)
        elsewhere = db.create_run(factory, question="q", graph="router-r1", owner="other-host:12")
        with pytest.raises(ResumeError, match="running on other-host"):
            service.resume(elsewhere)
        pending = db.create_run(factory, question="q", graph="router-r1", status="pending")
        with pytest.raises(ResumeError, match="pending"):
            service.resume(pending)
        direct = service.record_direct("q", graph="single:Small-LM", hops=[], answer="", error="boom")
        with pytest.raises(ResumeError, match="recorded directly"):
            service.resume(direct.run_id)
        # A refusal changes nothing.
        run = service.get_run(no_checkpoint)
        assert run is not None and run.status == "failed"


def test_in_memory_store_resumes_within_the_process() -> None:
    with make_service(Settings(database_url="sqlite://"), failing_on_second_think()) as service:
        failed = service.ask(QUESTION)
        result = service.resume(failed.run_id)
        assert_complete(service, result, ["think", "route", "think"])


def test_prune_removes_the_checkpoints_of_pruned_runs(settings: Settings) -> None:
    pool = make_fake_pool({ROUTER: [think_route(SMALL, "a?"), DOWN, think_route(SMALL, "b?"), DOWN]})
    fake(pool, SMALL).replies.extend(["x", "y"])
    with make_service(settings, pool) as service:
        old, new = service.ask(QUESTION).run_id, service.ask(QUESTION).run_id
        with db.session_scope(service.sessions) as session:
            session.execute(update(Run).where(Run.id == old).values(created_at=utcnow() - timedelta(days=9)))
        assert sorted(checkpoint_threads(settings)) == [f"run-{old}", f"run-{new}"]
        assert maintenance.prune(service.sessions, utcnow() - timedelta(days=1)) == 1
        assert checkpoint_threads(settings) == [f"run-{new}"]
        with pytest.raises(ResumeError, match=f"no run with id {old}"):
            service.resume(old)
