"""How the server fails: a model that is down (503 + Retry-After, /ready, /v1/models), a full queue (429 +
Retry-After, before a stream's headers), requests it cannot honour (400 before any model call) and errors
in the middle of a stream (an SSE error event in OpenAI's shape)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.pool import Pool
from app.pool.circuit import Outage
from app.server import create_app
from app.service import RouteGraphService
from tests.fakes import BIG, FAKE_BASE_URL, ROUTER, SMALL, fake, make_fake_pool
from tests.unit.test_langchain import router_reply, routing_pool
from tests.unit.test_server import ASK, error_of, parse_sse

STREAM = {**ASK, "stream": True}


def serve(tmp_path: Path, pool: Pool, **options: Any) -> Iterator[tuple[TestClient, RouteGraphService]]:
    service = RouteGraphService.create(
        Settings(database_url=f"sqlite:///{tmp_path}/t.db"), pool=pool, start_servers=False
    )
    try:
        with TestClient(create_app(service, **options)) as client:
            yield client, service
    finally:
        service.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, RouteGraphService]]:
    pool = routing_pool(4)
    fake(pool, BIG).replies = ["Lyon is big."] * 4
    yield from serve(tmp_path, pool)


def model_calls(pool: Pool) -> int:
    return sum(len(fake(pool, name).calls) for name in (ROUTER, SMALL, BIG))


def down(pool: Pool, name: str, in_s: float = 3.0) -> None:
    """Open the model's circuit as the supervisor does when its server dies."""
    pool.circuits.open(name, Outage("killed by signal 9", time.monotonic() + in_s))


# -- a model that is down ---------------------------------------------------------------------------------
@pytest.mark.parametrize("request_body", [ASK, STREAM], ids=["plain", "stream"])
def test_a_graph_whose_router_is_down_is_503_at_once(
    client: tuple[TestClient, RouteGraphService], request_body: dict[str, Any]
) -> None:
    http, service = client
    down(service.pool, ROUTER)
    started = time.monotonic()
    response = http.post("/v1/chat/completions", json=request_body)
    assert time.monotonic() - started < 1.0
    assert response.status_code == 503  # a stream too: refused before its headers
    error = error_of(response)
    assert error["code"] == "model_down"
    assert error["message"].startswith(f"model {ROUTER} is down, restarting; retry in ")
    assert response.headers["retry-after"] in {"2", "3"}
    assert model_calls(service.pool) == 0 and service.list_runs(limit=10) == []


def test_a_pool_model_that_is_down_is_503_and_the_others_still_answer(
    client: tuple[TestClient, RouteGraphService],
) -> None:
    http, service = client
    down(service.pool, BIG)
    direct = {"model": BIG, "messages": [{"role": "user", "content": "Big city?"}]}
    response = http.post("/v1/chat/completions", json=direct)
    assert response.status_code == 503 and error_of(response)["code"] == "model_down"
    assert int(response.headers["retry-after"]) >= 1
    assert http.post("/v1/chat/completions", json=ASK).status_code == 200  # the router routes to SMALL
    service.pool.circuits.close(BIG)  # back up
    assert http.post("/v1/chat/completions", json=direct).status_code == 200


def test_a_run_that_fails_because_its_router_went_down_is_503(tmp_path: Path) -> None:
    pool = make_fake_pool({ROUTER: [router_reply]})

    def dies(messages: Any) -> str:
        down(pool, ROUTER)
        raise httpx.ConnectError("connection refused")

    fake(pool, ROUTER).replies = [dies]
    for http, _ in serve(tmp_path, pool):
        response = http.post("/v1/chat/completions", json=ASK)
        assert response.status_code == 503 and error_of(response)["code"] == "model_down"


def test_ready_and_models_say_which_model_is_down(client: tuple[TestClient, RouteGraphService]) -> None:
    http, service = client
    down(service.pool, SMALL)
    ready = http.get("/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["endpoints"][SMALL] is False
    (reason,) = [r for r in body["not_ready"] if SMALL in r]
    assert reason.startswith(f"model {SMALL}: down, restarting; retry in ")
    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert listed[SMALL]["status"] == "down" and "restarting" in listed[SMALL]["detail"]
    assert listed[BIG]["status"] == listed["router-r1"]["status"] == "available"
    down(service.pool, ROUTER)
    assert http.get("/v1/models").json()["data"][0]["status"] == "down"  # graphs need their router


# -- backpressure -----------------------------------------------------------------------------------------
def concurrently(app: Any, bodies: list[dict[str, Any]], gap_s: float = 0.05) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

            async def post(i: int, body: dict[str, Any]) -> httpx.Response:
                await asyncio.sleep(i * gap_s)  # in this order
                return await http.post("/v1/chat/completions", json=body)

            return list(await asyncio.gather(*(post(i, b) for i, b in enumerate(bodies))))

    return asyncio.run(main())


def slow_pool(runs: int) -> Pool:
    return make_fake_pool({ROUTER: [router_reply] * 2 * runs, SMALL: ["Paris."] * runs}, delay_s=0.2)


def test_requests_queue_up_to_the_limit_then_429_with_retry_after(tmp_path: Path) -> None:
    for _, service in serve(tmp_path, slow_pool(3)):
        app = create_app(service, max_concurrency=1, max_queue=2)
        responses = concurrently(app, [ASK] * 4)
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        busy = responses[3]
        assert error_of(busy)["code"] == "busy" and error_of(busy)["type"] == "rate_limit_error"
        assert int(busy.headers["retry-after"]) >= 1


def test_a_stream_beyond_the_queue_is_429_not_200(tmp_path: Path) -> None:
    for _, service in serve(tmp_path, slow_pool(1)):
        app = create_app(service, max_concurrency=1, max_queue=0)
        first, second = concurrently(app, [STREAM, STREAM])
        assert first.status_code == 200 and parse_sse(first.text)[-1]["choices"] == [
            {"index": 0, "delta": {}, "finish_reason": "stop"}
        ]
        assert second.status_code == 429 and "retry-after" in second.headers
        assert error_of(second)["code"] == "busy"


# -- requests the server cannot honour: 400 before any model is called ------------------------------------
def bounded_pool(tokens: int = 2048) -> Pool:
    """The routing pool with context windows, as self-hosted servers have."""
    pool = routing_pool(2)
    fake(pool, BIG).replies = ["Lyon is big."]
    for entry in pool.all_entries():
        pool.bind_endpoint(entry.name, FAKE_BASE_URL, context_tokens=tokens)
    return pool


@pytest.mark.parametrize("model", ["router-r1", "r2-reasoner", BIG])
@pytest.mark.parametrize("stream", [False, True])
def test_a_question_over_the_context_window_is_400(tmp_path: Path, model: str, stream: bool) -> None:
    pool = bounded_pool()
    for http, service in serve(tmp_path, pool):
        huge = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "x" * 200_000}]}
        response = http.post("/v1/chat/completions", json=huge)
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
        assert "2,048 tokens per request" in error["message"] and "shorten the messages" in error["message"]
        assert model_calls(pool) == 0 and service.list_runs(limit=10) == []
        assert http.post("/v1/chat/completions", json=ASK).status_code == 200  # a short one still fits


@pytest.mark.parametrize(
    ("field", "value"),
    [("n", 2), ("n", 0), ("n", "1"), ("temperature", "hot"), ("temperature", 2.5), ("temperature", -1),
     ("temperature", True), ("top_p", 1.5)],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
def test_sampling_fields_routegraph_cannot_honour_are_400(
    client: tuple[TestClient, RouteGraphService], field: str, value: Any, stream: bool
) -> None:
    http, service = client
    response = http.post("/v1/chat/completions", json={**ASK, "stream": stream, field: value})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == field and error["type"] == "invalid_request_error"
    assert model_calls(service.pool) == 0


def test_valid_sampling_fields_are_accepted(client: tuple[TestClient, RouteGraphService]) -> None:
    body = {**ASK, "n": 1, "temperature": 0.7, "top_p": 1}
    assert client[0].post("/v1/chat/completions", json=body).status_code == 200


# -- errors during a stream -------------------------------------------------------------------------------
def test_a_run_that_fails_mid_stream_ends_with_an_openai_error_event(tmp_path: Path) -> None:
    pool = make_fake_pool({ROUTER: [httpx.ReadTimeout("the router took too long")]})
    for http, _ in serve(tmp_path, pool):
        with http.stream("POST", "/v1/chat/completions", json=STREAM) as response:
            assert response.status_code == 200  # nothing was known to be wrong before the run
            events = parse_sse(response.read().decode())
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        error = events[-1]["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "run_failed" and "timed out" in error["message"]


def test_a_tool_message_to_a_pool_model_is_400_not_502(client: tuple[TestClient, RouteGraphService]) -> None:
    # Found by fuzzing (test_fuzz_serving.py): LangChain needs a tool_call_id; the call failed upstream (502).
    turns = [{"role": "tool", "content": "42"}, {"role": "user", "content": "And?"}]
    response = client[0].post("/v1/chat/completions", json={"model": BIG, "messages": turns})
    assert response.status_code == 400 and error_of(response)["param"] == "messages.0.role"
    graph = client[0].post("/v1/chat/completions", json={"model": "router-r1", "messages": turns})
    assert graph.status_code == 200  # a graph reads it as context
