"""Router-R1 end to end on the embedded pool: real llama.cpp servers, real SQLite."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.pool import Pool
from app.service import RouteGraphService, RunResult
from graphs.hops import Hop

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote the play Hamlet?",
    "How many legs does a spider have?",
]


def _check_stored_trace(service: RouteGraphService, result: RunResult) -> None:
    run = service.get_run(result.run_id)
    assert run is not None and run.status == "ok"
    assert len(run.hops) >= 1
    for hop in run.hops:
        if hop.error:  # a refused or failed call costs nothing
            assert hop.cost == 0
            continue
        assert hop.model
        assert hop.input_tokens > 0 and hop.output_tokens > 0
        assert hop.latency_s > 0
        priced = service.pool.get(hop.model).cost(hop.input_tokens, hop.output_tokens)
        assert hop.cost == pytest.approx(priced)
    assert run.total_cost == pytest.approx(sum(h.cost for h in run.hops))
    assert run.input_tokens == sum(h.input_tokens for h in run.hops)
    assert run.output_tokens == sum(h.output_tokens for h in run.hops)
    assert run.pool_snapshot["models"][0]["price_in"] == service.pool.models[0].price_in


def test_three_questions_end_to_end(local_service: RouteGraphService) -> None:
    for question in QUESTIONS:
        result = local_service.ask(question)
        assert result.status == "ok", result.error
        # The grammar makes even the 135M router emit a valid action, and min_routes=1 makes it consult.
        assert result.hops[0].node == "think" and result.hops[0].error is None
        assert any(h.node == "route" and h.error is None and h.response for h in result.hops)
        assert result.answer
        _check_stored_trace(local_service, result)


def test_pool_server_killed_mid_run(settings: Settings, split_pool: Pool) -> None:
    with RouteGraphService.create(settings, pool=split_pool) as service:
        assert service.servers is not None
        gemma = service.servers.by_model["Gemma-3-270M"]
        items: list[Hop | RunResult] = []
        for item in service.stream("Who wrote the play Hamlet?"):
            items.append(item)
            if isinstance(item, Hop) and item.node == "think" and gemma.running:
                gemma.kill()  # the router has just chosen Gemma, the only candidate
        result = items[-1]
        assert isinstance(result, RunResult)
        assert result.status == "ok"
        failed = [h for h in result.hops if h.node == "route"]
        assert failed and all(h.error and "Gemma-3-270M" in h.error for h in failed)
        # Refused by its circuit (the supervisor restarts it meanwhile), or a refused connection when the
        # call had started before the kill.
        assert any(s in (failed[0].error or "") for s in ("down, restarting; retry in", "cannot connect"))
        assert "did not answer" in str(failed[0].detail["told_router"])
        # The router was told, in its information block, and still produced a final answer.
        later_thoughts = [h for h in result.hops[1:] if h.router_text is not None]
        assert later_thoughts, "the router must run again after the failed call"
        stored = service.get_run(result.run_id)
        assert stored is not None and stored.status == "ok"
        assert [h.node for h in stored.hops] == [h.node for h in result.hops]


def test_router_server_killed_mid_run(settings: Settings, split_pool: Pool) -> None:
    with RouteGraphService.create(settings, pool=split_pool) as service:
        assert service.servers is not None
        router = service.servers.by_model[split_pool.router.name]
        items: list[Hop | RunResult] = []
        for item in service.stream("What is the capital of France?"):
            items.append(item)
            if isinstance(item, Hop) and item.node == "route":
                router.kill()  # the router's next step has nowhere to go
        result = items[-1]
        assert isinstance(result, RunResult)
        assert result.status == "failed"
        assert result.error and split_pool.router.name in result.error
        stored = service.get_run(result.run_id)
        assert stored is not None and stored.status == "failed" and stored.error
        assert [h.node for h in stored.hops] == ["think", "route"]
