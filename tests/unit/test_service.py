"""The service over a scripted pool: runs, hops and failures land in the trace store as they happen."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Generator
from pathlib import Path

import httpx
import openai
import pytest

from app.config import Settings
from app.pool import Pool
from app.service import QuestionError, RouteGraphService, RunResult
from graphs.hops import Hop
from storage import db
from tests.fakes import BIG, ROUTER, SMALL, fake, make_fake_pool, think_answer, think_route

QUESTION = "What is the capital of France?"
REQUEST = httpx.Request("POST", "http://fake.invalid/v1/chat/completions")
HOP_KEYS = {"node", "model", "input_tokens", "output_tokens", "cost", "latency_s", "error"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/t.db")


def make_service(settings: Settings, pool: Pool) -> RouteGraphService:
    return RouteGraphService.create(settings, pool=pool, start_servers=False)


@pytest.fixture
def route_answer_pool() -> Pool:
    return make_fake_pool(
        {ROUTER: [think_route(SMALL, "capital of France?"), think_answer("Paris")], SMALL: ["Paris."]}
    )


def run_count(service: RouteGraphService) -> int:
    return len(service.list_runs(limit=1000))


def test_route_answer_run_is_stored(settings: Settings, route_answer_pool: Pool) -> None:
    with make_service(settings, route_answer_pool) as service:
        result = service.ask(QUESTION)
        run = service.get_run(result.run_id)

    assert (result.status, result.answer, result.error, result.graph) == ("ok", "Paris", None, "router-r1")
    assert [h.node for h in result.hops] == ["think", "route", "think"]
    assert run is not None
    assert (run.status, run.answer, run.error, run.question, run.graph) == (
        "ok",
        "Paris",
        None,
        QUESTION,
        "router-r1",
    )
    assert run.router_model == ROUTER
    assert run.finished_at is not None and run.owner == f"{socket.gethostname()}:{os.getpid()}"
    snapshot = run.pool_snapshot
    assert snapshot["router"]["name"] == ROUTER
    assert (snapshot["router"]["price_in"], snapshot["router"]["price_out"]) == (0.05, 0.10)
    prices = {m["name"]: (m["price_in"], m["price_out"]) for m in snapshot["models"]}
    assert prices == {SMALL: (0.10, 0.20), BIG: (1.00, 2.00)}

    assert len(run.hops) == len(result.hops) == 3
    for index, (row, hop) in enumerate(zip(run.hops, result.hops, strict=True)):
        assert row.index == index
        assert (row.node, row.model, row.sub_query, row.router_text, row.response, row.error) == (
            hop.node,
            hop.model,
            hop.sub_query,
            hop.router_text,
            hop.response,
            hop.error,
        )
        assert (row.input_tokens, row.output_tokens) == (hop.input_tokens, hop.output_tokens)
        assert row.cost == pytest.approx(hop.cost) and row.latency_s == pytest.approx(hop.latency_s)
        assert row.input_tokens >= 1 and row.output_tokens >= 1 and row.cost > 0
    assert run.hops[1].response == "Paris." and run.hops[1].sub_query == "capital of France?"
    assert (run.total_cost, run.input_tokens, run.output_tokens) == pytest.approx(
        (result.total_cost, result.input_tokens, result.output_tokens)
    )
    assert (run.total_cost, run.input_tokens, run.output_tokens) == pytest.approx(
        db.hop_sums(service.sessions, run.id)
    )
    assert result.total_cost == pytest.approx(sum(h.cost for h in result.hops))


def test_snapshot_keeps_the_prices_of_its_time(settings: Settings, tmp_path: Path) -> None:
    first = make_fake_pool({ROUTER: [think_answer("Paris")]})
    dearer = make_fake_pool({ROUTER: [think_answer("Paris")]}, models={SMALL: (9.0, 9.0)})
    with make_service(settings, first) as service:
        run_id = service.ask(QUESTION).run_id
    with make_service(settings, dearer) as service:
        service.ask(QUESTION)
        old = service.get_run(run_id)
    assert old is not None
    assert {m["name"]: m["price_in"] for m in old.pool_snapshot["models"]} == {SMALL: 0.10, BIG: 1.00}


def test_to_json_dict(settings: Settings, route_answer_pool: Pool) -> None:
    with make_service(settings, route_answer_pool) as service:
        result = service.ask(QUESTION)
    data = result.to_json_dict()
    assert {"run_id", "answer", "total_cost", "hops", "status", "error"} <= set(data)
    assert (data["run_id"], data["answer"], data["status"]) == (result.run_id, "Paris", "ok")
    assert data["total_cost"] == result.total_cost
    assert len(data["hops"]) == 3
    for item, hop in zip(data["hops"], result.hops, strict=True):
        assert set(item) >= HOP_KEYS
        assert {key: item[key] for key in HOP_KEYS} == {key: getattr(hop, key) for key in HOP_KEYS}
    assert json.loads(json.dumps(data)) == data  # plain JSON types only


def test_stream_yields_stored_hops_before_the_result(settings: Settings, route_answer_pool: Pool) -> None:
    with make_service(settings, route_answer_pool) as service:
        items: list[Hop | RunResult] = []
        for item in service.stream(QUESTION):
            items.append(item)
            latest = service.list_runs(limit=1)[0]
            run = service.get_run(latest.id)
            assert run is not None
            if isinstance(item, Hop):
                # The run streams ahead of its reader (LoopThread.iterate), so later hops may be stored
                # already; what holds is that every hop handed out is in the store, in its place.
                hops_seen = [h for h in items if isinstance(h, Hop)]
                assert len(run.hops) >= len(hops_seen)
                stored = run.hops[len(hops_seen) - 1]
                assert (stored.node, stored.model, stored.input_tokens, stored.output_tokens) == (
                    item.node,
                    item.model,
                    item.input_tokens,
                    item.output_tokens,
                )
                assert run.total_cost >= sum(h.cost for h in hops_seen) - 1e-12
            else:
                assert run.status == "ok" and run.id == item.run_id
    assert [type(i).__name__ for i in items] == ["Hop", "Hop", "Hop", "RunResult"]
    final = items[-1]
    assert isinstance(final, RunResult)
    assert final.hops == items[:-1]


def test_abandoned_stream_closes_its_run(settings: Settings, route_answer_pool: Pool) -> None:
    # A consumer that walks away (a Streamlit rerun) closes the generator: the run is not left 'running'.
    # The run goes on while the reader looks at a hop, so the routed model is slow: the close lands in it.
    fake(route_answer_pool, SMALL).delay_s = 60
    with make_service(settings, route_answer_pool) as service:
        stream: Generator[Hop | RunResult, None, None] = service.stream(QUESTION)  # type: ignore[assignment]
        first = next(stream)
        assert isinstance(first, Hop) and first.node == "think"
        stream.close()  # cancels the call in flight: returns at once, not after the model's 60 s
        run = service.list_runs(limit=1)[0]
        stored = service.get_run(run.id)
        assert stored is not None
        assert (stored.status, stored.error) == ("failed", "cancelled")
        assert stored.finished_at is not None and [h.node for h in stored.hops] == ["think"]
        # The service stays usable.
        fake(service.pool, ROUTER).replies.append(think_answer("Paris"))
        assert service.ask("Again?").answer == "Paris"


@pytest.mark.parametrize(
    "failure",
    [openai.APIConnectionError(request=REQUEST), httpx.ConnectError("[Errno 111] Connection refused")],
    ids=["openai", "httpx"],
)
def test_router_failure_mid_run_fails_the_run_and_keeps_its_hops(
    settings: Settings, failure: Exception
) -> None:
    pool = make_fake_pool({ROUTER: [think_route(SMALL, "capital?"), failure], SMALL: ["Paris"]})
    with make_service(settings, pool) as service:
        result = service.ask(QUESTION)
        run = service.get_run(result.run_id)

    assert result.status == "failed"
    assert result.answer == ""
    assert result.error is not None
    assert "endpoint failed" in result.error and ROUTER in result.error and "cannot connect" in result.error
    assert [h.node for h in result.hops] == ["think", "route"]
    assert run is not None
    assert (run.status, run.error, run.answer) == ("failed", result.error, "")
    assert run.finished_at is not None
    assert [(h.node, h.model) for h in run.hops] == [("think", ROUTER), ("route", SMALL)]
    assert run.hops[1].response == "Paris"
    assert run.total_cost == pytest.approx(sum(h.cost for h in result.hops))


def test_first_router_call_failing_stores_an_empty_failed_run(settings: Settings) -> None:
    pool = make_fake_pool({ROUTER: [httpx.ReadTimeout("slow")]})
    with make_service(settings, pool) as service:
        result = service.ask(QUESTION)
        run = service.get_run(result.run_id)
    assert result.status == "failed" and result.hops == []
    assert result.error is not None and "timed out" in result.error
    assert run is not None and run.status == "failed" and run.hops == [] and run.total_cost == 0.0


def test_malformed_router_output_is_ok_with_an_error_note(settings: Settings) -> None:
    pool = make_fake_pool({ROUTER: ["<think>hmm</think> It is Paris.", "Paris"]})
    with make_service(settings, pool) as service:
        result = service.ask(QUESTION)
        run = service.get_run(result.run_id)
    assert (result.status, result.answer) == ("ok", "Paris")
    assert result.error is not None and result.error.startswith("no action")
    assert run is not None and (run.status, run.error) == ("ok", result.error)


@pytest.mark.parametrize("question", ["", "   ", "\n\t "])
def test_empty_question_is_refused_without_a_run(settings: Settings, question: str) -> None:
    pool = make_fake_pool({ROUTER: [think_answer("Paris")]})
    with make_service(settings, pool) as service:
        with pytest.raises(QuestionError, match="empty"):
            service.ask(question)
        with pytest.raises(QuestionError):
            list(service.stream(question))
        assert run_count(service) == 0
    assert fake(pool, ROUTER).calls == []


@pytest.mark.parametrize("budget", [0.0, -0.01])
def test_non_positive_budget_is_refused(settings: Settings, budget: float) -> None:
    pool = make_fake_pool({ROUTER: [think_answer("Paris")]})
    with make_service(settings, pool) as service:
        with pytest.raises(QuestionError, match="budget"):
            service.ask(QUESTION, budget_usd=budget)
        assert run_count(service) == 0


def test_unknown_graph_is_refused(settings: Settings) -> None:
    pool = make_fake_pool({ROUTER: [think_answer("Paris")]})
    with make_service(settings, pool) as service:
        with pytest.raises(QuestionError, match=r"unknown graph 'r3'.*router-r1"):
            service.ask(QUESTION, graph="r3")
        assert run_count(service) == 0


def test_budget_and_max_turns_options_reach_the_graph(settings: Settings) -> None:
    pool = make_fake_pool(
        {ROUTER: [think_route(BIG, "capital?"), think_route(SMALL, "capital?"), "Paris"], SMALL: ["Paris"]}
    )
    with make_service(settings, pool) as service:
        result = service.ask(QUESTION, budget_usd=1e-4, max_turns=1)
    route = result.hops[1]
    assert route.error is not None and route.error.startswith("budget exceeded")
    assert [h.node for h in result.hops] == ["think", "route", "think", "answer"]
    assert fake(pool, BIG).calls == [] and fake(pool, SMALL).calls == []
    assert result.answer == "Paris"


def test_router_endpoint_overrides_the_router(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", router_endpoint="http://10.0.0.7:8000/v1")
    pool = make_fake_pool({ROUTER: [think_answer("Paris")]})
    with make_service(settings, pool) as service:
        assert service.pool.router.base_url == "http://10.0.0.7:8000/v1"
        assert service.pool.router.backend == "openai"
        assert service.pool.router.name == ROUTER
        assert service.pool.base_url(service.pool.router) == "http://10.0.0.7:8000/v1"
        assert service.pool.names == pool.names
        assert service.pool.timeout_s == settings.request_timeout_s


def test_request_timeout_reaches_the_pool(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", request_timeout_s=2.5)
    with make_service(settings, make_fake_pool()) as service:
        assert service.pool.timeout_s == 2.5
        assert service.pool.router.base_url == "http://fake.invalid/v1"  # no override without the setting


def test_create_marks_this_hosts_orphans(settings: Settings) -> None:
    factory = db.session_factory(db.make_engine(settings.database_url))
    dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
    orphan = db.create_run(
        factory, question="q", graph="router-r1", owner=f"{socket.gethostname()}:{dead_pid}"
    )
    mine = db.create_run(
        factory, question="q", graph="router-r1", owner=f"{socket.gethostname()}:{os.getpid()}"
    )
    with make_service(settings, make_fake_pool()) as service:
        statuses = {run.id: run.status for run in service.list_runs()}
    assert statuses == {orphan: "failed", mine: "running"}


def test_in_memory_database(tmp_path: Path) -> None:
    pool = make_fake_pool({ROUTER: [think_answer("Paris")]})
    with make_service(Settings(database_url="sqlite://"), pool) as service:
        result = service.ask(QUESTION)
        run = service.get_run(result.run_id)
    assert run is not None and run.answer == "Paris" and len(run.hops) == 1


def test_a_conversation_is_asked_as_its_last_user_turn_with_the_turns_before_as_context() -> None:
    from app.service.conversation import question_from_turns

    turns = [("system", "Be brief."), ("user", "Hi"), ("assistant", " "), ("user", "Capital of France?")]
    assert question_from_turns(turns, "user") == (
        "Context:\nsystem: Be brief.\nuser: Hi\n\nQuestion: Capital of France?"
    )
    assert question_from_turns(turns, "user", include_history=False) == "Capital of France?"
    assert question_from_turns([("user", "Capital?")], "user") == "Capital?"
    assert question_from_turns([("system", "Be brief.")], "user") is None
