"""The OpenAI-compatible server over a scripted pool, through FastAPI's TestClient."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.pool import Pool
from app.server import create_app
from app.service import GRAPHS, RouteGraphService
from tests.fakes import BIG, ROUTER, SMALL, make_fake_pool
from tests.unit.test_langchain import router_reply, routing_pool

KEY = "sk-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
ASK = {"model": "router-r1", "messages": [{"role": "user", "content": "Capital of France?"}]}


def make_client(tmp_path: Path, pool: Pool, **limits: int) -> Iterator[tuple[TestClient, RouteGraphService]]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db")
    service = RouteGraphService.create(settings, pool=pool, start_servers=False)
    try:
        with TestClient(create_app(service, api_key=KEY, **limits)) as client:
            yield client, service
    finally:
        service.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, RouteGraphService]]:
    pool = routing_pool(4)
    pool.client_factory.models[BIG.lower()].replies = ["Lyon is big."]  # type: ignore[union-attr]
    yield from make_client(tmp_path, pool, max_body_bytes=2048)


def test_models_lists_graphs_and_pool_models(client: tuple[TestClient, RouteGraphService]) -> None:
    response = client[0].get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == [*GRAPHS, SMALL, BIG]


def test_completion_has_usage_routegraph_and_headers(client: tuple[TestClient, RouteGraphService]) -> None:
    http, service = client
    response = http.post("/v1/chat/completions", json=ASK, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
    extra = body["routegraph"]
    assert [h["node"] for h in extra["hops"]] == ["think", "route", "think"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == sum(h["input_tokens"] for h in extra["hops"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response.headers["x-routegraph-run-id"] == str(extra["run_id"])
    assert float(response.headers["x-routegraph-cost"]) == pytest.approx(extra["total_cost"])
    run = service.get_run(extra["run_id"])
    assert run is not None and run.status == "ok" and run.question == "Capital of France?"


def test_pool_model_passes_through_without_a_trace(client: tuple[TestClient, RouteGraphService]) -> None:
    http, service = client
    request = {"model": BIG, "messages": [{"role": "user", "content": "Big city?"}], "max_tokens": 8}
    response = http.post("/v1/chat/completions", json=request, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Lyon is big."
    assert body["routegraph"]["total_cost"] > 0 and body["routegraph"]["run_id"] is None
    assert body["usage"]["completion_tokens"] == 3
    assert service.list_runs(limit=10) == []


def parse_sse(text: str) -> list[dict[str, Any]]:
    data = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def test_streaming_sse(client: tuple[TestClient, RouteGraphService]) -> None:
    request = {**ASK, "stream": True, "stream_options": {"include_usage": True}}
    with client[0].stream("POST", "/v1/chat/completions", json=request, headers=AUTH) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    content = "".join(str(c["delta"].get("content") or "") for e in events for c in e["choices"])
    assert content == "Paris"
    hops = [e["routegraph"]["hop"]["node"] for e in events if "hop" in e.get("routegraph", {})]
    assert hops == ["think", "route", "think"]
    finals = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"] == "stop"]
    assert len(finals) == 1 and finals[0]["routegraph"]["run_id"]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] > 0


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_wrong_or_missing_key_is_401(
    client: tuple[TestClient, RouteGraphService], headers: dict[str, str]
) -> None:
    for response in (
        client[0].post("/v1/chat/completions", json=ASK, headers=headers),
        client[0].get("/v1/models", headers=headers),
    ):
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"model": "router-r1"}',
        b'{"model": "router-r1", "messages": "hi"}',
        b'{"model": "router-r1", "messages": [{"role": "wizard", "content": "x"}]}',
        b'{"model": "router-r1", "messages": [{"role": "system", "content": "x"}]}',
        b'{"model": "router-r1", "messages": [{"role": "user", "content": "  "}]}',
    ],
)
def test_malformed_body_is_400(client: tuple[TestClient, RouteGraphService], content: bytes) -> None:
    response = client[0].post("/v1/chat/completions", content=content, headers=AUTH)
    assert response.status_code == 400, response.text
    assert error_of(response)["type"] == "invalid_request_error"


def test_unknown_model_and_route_are_404(client: tuple[TestClient, RouteGraphService]) -> None:
    response = client[0].post("/v1/chat/completions", json={**ASK, "model": "gpt-9"}, headers=AUTH)
    assert response.status_code == 404 and error_of(response)["code"] == "model_not_found"
    assert client[0].get("/v1/nothing", headers=AUTH).status_code == 404


def test_too_large_body_is_413(client: tuple[TestClient, RouteGraphService]) -> None:
    big = {**ASK, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = client[0].post("/v1/chat/completions", json=big, headers=AUTH)
    assert response.status_code == 413
    error_of(response)


def test_failed_run_is_502_with_its_run_id(tmp_path: Path) -> None:

    pool = make_fake_pool({ROUTER: [httpx.ConnectError("down")]})
    for http, _ in make_client(tmp_path, pool):
        response = http.post("/v1/chat/completions", json=ASK, headers=AUTH)
        assert response.status_code == 502 and "failed" in str(error_of(response)["message"])


def test_parallel_requests_run_concurrently_and_overflow_is_429(tmp_path: Path) -> None:
    import asyncio
    import time

    pool = make_fake_pool({ROUTER: [router_reply] * 6, SMALL: ["Paris."] * 3}, delay_s=0.3)
    for _, service in make_client(tmp_path, pool, max_concurrency=2, max_queue=0):

        async def main(app: object) -> list[int]:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                calls = [http.post("/v1/chat/completions", json=ASK) for _ in range(3)]
                return [r.status_code for r in await asyncio.gather(*calls)]

        started = time.perf_counter()
        codes = asyncio.run(main(create_app(service, max_concurrency=2, max_queue=0)))
        elapsed = time.perf_counter() - started
        assert sorted(codes) == [200, 200, 429]
        assert elapsed < 1.5  # two runs of three 0.3 s calls overlap (in turn: 1.8 s)
        assert len(service.list_runs(limit=10)) == 2
