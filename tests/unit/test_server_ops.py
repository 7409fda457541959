"""The server's operations endpoints: /health, /ready (real HTTP endpoints, a real SQLite file) and
Prometheus /metrics, scraped and parsed with ``prometheus_client.parser``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.pool import Pool
from app.server import create_app
from app.service import RouteGraphService
from tests.fakes import BIG, ROUTER, SMALL, make_fake_pool
from tests.unit.test_langchain import routing_pool
from tests.unit.test_server import ASK, AUTH, KEY

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class _Models(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint as far as a health check goes: GET /v1/models."""

    def do_GET(self) -> None:
        ok = self.path == "/v1/models"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"object": "list", "data": []}' if ok else b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def endpoint() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def served_pool(endpoint: ThreadingHTTPServer, runs: int = 1) -> Pool:
    """The scripted routing pool, each entry's endpoint bound to the live /v1/models server."""
    pool = routing_pool(runs)
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/v1"
    for entry in pool.all_entries():
        pool.bind_endpoint(entry.name, url)
    return pool


def client_for(
    settings: Settings, pool: Pool, **options: Any
) -> Iterator[tuple[TestClient, RouteGraphService]]:
    service = RouteGraphService.create(settings, pool=pool, start_servers=False)
    try:
        with TestClient(create_app(service, **options)) as client:
            yield client, service
    finally:
        service.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/t.db")


def scrape(client: TestClient, headers: dict[str, str] | None = None) -> Samples:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_health_answers_without_a_key(settings: Settings) -> None:
    for client, _ in client_for(settings, routing_pool(), api_key=KEY):
        response = client.get("/health")
        assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_when_every_endpoint_answers_and_the_store_takes_writes(
    settings: Settings, endpoint: ThreadingHTTPServer
) -> None:
    for client, service in client_for(settings, served_pool(endpoint), api_key=KEY):
        response = client.get("/ready")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready" and body["not_ready"] == [] and body["database"] == "writable"
        assert body["endpoints"] == {ROUTER: True, SMALL: True, BIG: True}
        assert service.list_runs(limit=10) == []  # the write check leaves nothing behind


def test_not_ready_names_the_unreachable_endpoint(settings: Settings, endpoint: ThreadingHTTPServer) -> None:
    pool = served_pool(endpoint)
    pool.bind_endpoint(BIG, "http://127.0.0.1:9/v1")  # the discard port: nothing listens there
    for client, _ in client_for(settings, pool):
        response = client.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not ready" and body["endpoints"][BIG] is False
        assert body["not_ready"] == [f"model {BIG}: endpoint unreachable"]


def test_not_ready_when_the_store_is_read_only(tmp_path: Path, endpoint: ThreadingHTTPServer) -> None:
    path = tmp_path / "t.db"
    RouteGraphService.create(Settings(database_url=f"sqlite:///{path}"), pool=routing_pool()).close()
    read_only = Settings(database_url=f"sqlite:///file:{path}?mode=ro&uri=true")
    for client, _ in client_for(read_only, served_pool(endpoint)):
        response = client.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert all(body["endpoints"].values())
        assert "readonly" in body["database"] and body["not_ready"] == [f"database: {body['database']}"]


def test_metrics_count_requests_hops_tokens_cost_and_errors(settings: Settings) -> None:
    pool = routing_pool(1)
    pool.client_factory.models[BIG.lower()].replies = ["Lyon is big."]  # type: ignore[union-attr]
    for client, _ in client_for(settings, pool, api_key=KEY):
        assert client.get("/metrics").status_code == 401  # the API key guards the metrics too
        run = client.post("/v1/chat/completions", json=ASK, headers=AUTH).json()["routegraph"]
        direct = {"model": BIG, "messages": [{"role": "user", "content": "Big city?"}]}
        call = client.post("/v1/chat/completions", json=direct, headers=AUTH).json()["routegraph"]
        assert (
            client.post("/v1/chat/completions", json={**ASK, "model": "gpt-9"}, headers=AUTH).status_code
            == 404
        )
        assert client.post("/v1/chat/completions", content=b"{", headers=AUTH).status_code == 400

        samples = scrape(client, AUTH)
        requests = "routegraph_http_requests_total"
        route = "/v1/chat/completions"
        assert value(samples, requests, route=route, model="router-r1", status="200") == 1
        assert value(samples, requests, route=route, model=BIG, status="200") == 1
        assert value(samples, requests, route=route, model="", status="404") == 1  # no user string as label
        assert value(samples, requests, route=route, model="", status="400") == 1
        latency = "routegraph_http_request_duration_seconds_count"
        assert value(samples, latency, route=route, model="router-r1") == 1
        assert value(samples, "routegraph_runs_total", graph="router-r1", status="ok") == 1

        hops = run["hops"] + call["hops"]
        for model in {h["model"] for h in hops}:
            mine = [h for h in hops if h["model"] == model]
            for node in {h["node"] for h in mine}:
                count = sum(1 for h in mine if h["node"] == node)
                assert value(samples, "routegraph_hops_total", model=model, node=node) == count
            tokens_in = value(samples, "routegraph_tokens_total", model=model, kind="input")
            assert tokens_in == sum(h["input_tokens"] for h in mine)
            tokens_out = value(samples, "routegraph_tokens_total", model=model, kind="output")
            assert tokens_out == sum(h["output_tokens"] for h in mine)
            cost = value(samples, "routegraph_cost_usd_total", model=model)
            assert cost == pytest.approx(sum(h["cost"] for h in mine))
        assert value(samples, "routegraph_hops_total", model=ROUTER, node="think") == 2

        errors = "routegraph_errors_total"
        assert value(samples, errors, kind="model_not_found") == 1
        assert value(samples, errors, kind="invalid_request_error") == 1
        assert value(samples, errors, kind="invalid_api_key") == 1


def test_failed_runs_and_failed_hops_are_errors(settings: Settings) -> None:
    pool = make_fake_pool({ROUTER: [httpx.ConnectError("down")]})
    for client, _ in client_for(settings, pool):
        assert client.post("/v1/chat/completions", json=ASK).status_code == 502
        samples = scrape(client)
        assert value(samples, "routegraph_errors_total", kind="run_failed") == 1
        assert value(samples, "routegraph_runs_total", graph="router-r1", status="failed") == 1
        status = value(
            samples,
            "routegraph_http_requests_total",
            route="/v1/chat/completions",
            model="router-r1",
            status="502",
        )
        assert status == 1


def test_each_app_has_its_own_registry(settings: Settings, tmp_path: Path) -> None:
    other = Settings(database_url=f"sqlite:///{tmp_path}/other.db")
    for first, _ in client_for(settings, routing_pool(1)):
        for second, _ in client_for(other, routing_pool(1)):
            assert first.post("/v1/chat/completions", json=ASK).status_code == 200
            route = "/v1/chat/completions"
            assert (
                value(
                    scrape(first),
                    "routegraph_http_requests_total",
                    route=route,
                    model="router-r1",
                    status="200",
                )
                == 1
            )
            assert (
                value(
                    scrape(second),
                    "routegraph_http_requests_total",
                    route=route,
                    model="router-r1",
                    status="200",
                )
                == 0
            )
