"""R2-Reasoner end to end on the embedded pool: real llama.cpp servers, real SQLite.

The 135M router is weak: the JSON schema it is constrained to makes its decomposition valid whatever it
writes, and nothing it produces may crash the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.pool import load_pool
from app.service import RouteGraphService, RunResult

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "What is the capital of the country where the Eiffel Tower stands?",
]


@pytest.fixture(scope="module")
def r2_service(
    tmp_path_factory: pytest.TempPathFactory, local_pool_file: Path
) -> Iterator[RouteGraphService]:
    # Short replies keep the run quick on 2 CPU cores; the router allocates (strategy 'router').
    settings = Settings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('r2') / 'traces.db'}",
        request_timeout_s=120,
        response_max_tokens=48,
        router_max_tokens=256,
        r2_allocation="router",
    )
    service = RouteGraphService.create(settings, pool=load_pool(local_pool_file))
    try:
        yield service
    finally:
        service.close()


def _check_stored_trace(service: RouteGraphService, result: RunResult) -> None:
    run = service.get_run(result.run_id)
    assert run is not None and run.status == "ok" and run.graph == "r2-reasoner"
    nodes = [h.node for h in run.hops]
    decomposed, allocated = run.hops[0], run.hops[1]
    plan = decomposed.detail.get("subtasks") or decomposed.detail.get("fallback")
    assert plan, decomposed.detail
    ids = [s["id"] for s in plan]
    assert nodes[0] == "decompose" and nodes[1] == "allocate"
    # The aggregator ends the run, unless the question's own subtask (the last) stated its letter or number.
    assert nodes[-1] == "aggregate" or (nodes[-1] == "execute" and run.hops[-1].subtask_id == ids[-1])
    # One execute hop per subtask (no escalation by default), every subtask allocated.
    executed = [h for h in run.hops if h.node == "execute"]
    assert sorted(h.subtask_id for h in executed) == sorted(ids)
    assert set(allocated.detail["allocation"]) == set(ids)
    for hop in executed:
        assert hop.model == allocated.detail["allocation"][hop.subtask_id]
    for hop in run.hops:
        if hop.model is None or (hop.error and hop.input_tokens == 0):
            assert hop.cost == 0
            continue
        assert hop.input_tokens > 0 and hop.output_tokens > 0 and hop.latency_s > 0
        priced = service.pool.get(hop.model).cost(hop.input_tokens, hop.output_tokens)
        assert hop.cost == pytest.approx(priced)
    assert run.total_cost == pytest.approx(sum(h.cost for h in run.hops))
    assert run.input_tokens == sum(h.input_tokens for h in run.hops)
    assert run.output_tokens == sum(h.output_tokens for h in run.hops)


@pytest.mark.parametrize("question", QUESTIONS, ids=["gsm8k", "two-hop"])
def test_r2_end_to_end(r2_service: RouteGraphService, question: str) -> None:
    result = r2_service.ask(question, graph="r2-reasoner")
    assert result.status == "ok", result.error
    # The schema-constrained decomposition parses; the router allocation is a real call.
    assert result.hops[0].node == "decompose" and result.hops[0].error is None, result.hops[0].error
    assert result.hops[1].node == "allocate" and result.hops[1].model == r2_service.pool.router.name
    assert result.answer
    _check_stored_trace(r2_service, result)
