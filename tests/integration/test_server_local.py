"""`routegraph serve` as a real subprocess on the embedded pool, called with the official openai client."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from app.config import PROJECT_ROOT
from storage import db

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "sk-integration"
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    db_url = f"sqlite:///{tmp_path_factory.mktemp('serve') / 'traces.db'}"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEGRAPH_")}
    env.update(
        ROUTEGRAPH_DATABASE_URL=db_url,
        ROUTEGRAPH_API_KEY=KEY,
        ROUTEGRAPH_MAX_TURNS="1",
        ROUTEGRAPH_RESPONSE_MAX_TOKENS="24",
        ROUTEGRAPH_ROUTER_MAX_TOKENS="96",
        ROUTEGRAPH_REQUEST_TIMEOUT_S="170",
        ROUTEGRAPH_SERVER_MAX_CONCURRENCY="4",  # the rest queue in the server, not in llama.cpp,
    )
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    command += ["--pool", str(PROJECT_ROOT / "pools" / "tiny.yaml")]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "routegraph serve exited"
            try:
                if httpx.get(f"{base}/v1/models", timeout=2).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "routegraph serve did not come up"
            time.sleep(0.5)
        yield base, db_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_openai_client_against_the_server(server: tuple[str, str]) -> None:
    base, _ = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=120)
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "router-r1" and "Gemma-3-270M" in ids and "SmolLM2-135M-Instruct" in ids

    raw = client.chat.completions.with_raw_response.create(
        model="router-r1", messages=QUESTION, max_tokens=24
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0
    extra = completion.model_extra or {}
    assert extra["routegraph"]["run_id"] > 0 and extra["routegraph"]["hops"]
    assert int(raw.headers["x-routegraph-run-id"]) == extra["routegraph"]["run_id"]
    assert float(raw.headers["x-routegraph-cost"]) == pytest.approx(
        extra["routegraph"]["total_cost"], abs=1e-9
    )

    stream = client.chat.completions.create(
        model="router-r1",
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    direct = client.chat.completions.create(model="Gemma-3-270M", messages=QUESTION, max_tokens=8)
    assert direct.usage is not None and direct.usage.completion_tokens > 0

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=QUESTION)
    bad = httpx.post(
        f"{base}/v1/chat/completions",
        content=b'{"model": "router-r1", "messages": ',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_sixteen_concurrent_requests_each_store_a_trace(server: tuple[str, str]) -> None:
    base, db_url = server
    factory = db.session_factory(db.make_engine(db_url))
    before = {r.id for r in db.list_runs(factory, limit=1000)}

    async def main() -> list[int]:
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=280)
        calls = [
            client.chat.completions.with_raw_response.create(
                model="router-r1",
                messages=[{"role": "user", "content": f"What is {i} plus {i}?"}],
            )
            for i in range(16)
        ]
        responses = await asyncio.gather(*calls)
        return [int(r.headers["x-routegraph-run-id"]) for r in responses]

    run_ids = asyncio.run(main())
    assert len(set(run_ids)) == 16 and not set(run_ids) & before
    for run_id in run_ids:
        run = db.get_run(factory, run_id)
        assert run is not None and run.status == "ok" and run.finished_at is not None and run.hops


def test_health_ready_and_metrics_on_real_endpoints(server: tuple[str, str]) -> None:
    base, _ = server
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/ready", timeout=60)
    assert ready.status_code == 200, ready.text
    assert ready.json()["database"] == "writable"
    assert set(ready.json()["endpoints"]) == {"SmolLM2-135M-Router", "SmolLM2-135M-Instruct", "Gemma-3-270M"}

    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=120)
    direct = client.chat.completions.create(model="Gemma-3-270M", messages=QUESTION, max_tokens=8)
    assert direct.usage is not None
    scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
    }
    gemma = (("model", "Gemma-3-270M"), ("node", "pass-through"))
    assert samples[("routegraph_hops_total", gemma)] >= 1
    tokens = samples[("routegraph_tokens_total", (("kind", "output"), ("model", "Gemma-3-270M")))]
    assert tokens >= direct.usage.completion_tokens
    ok = (("model", "Gemma-3-270M"), ("route", "/v1/chat/completions"), ("status", "200"))
    assert samples[("routegraph_http_requests_total", ok)] >= 1
