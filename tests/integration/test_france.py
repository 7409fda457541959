"""The product's first question on the embedded default pool (Qwen2.5-Coder 0.5B routing, the 1.5B, the 0.5B
and SmolLM2 answering), end to end: `routegraph ask` and `routegraph serve` with the official openai client.

"What is the capital of France?" must come back as "Paris" in at most 3 hops: the router passes the
question on, a model answers it, and the router's answer ends the run. (The browser path is
tests/integration/test_browser.py.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from app.config import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTION = "What is the capital of France?"
POOL = PROJECT_ROOT / "pools" / "local.yaml"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEGRAPH_")}
    env.update(
        ROUTEGRAPH_DATABASE_URL=f"sqlite:///{tmp_path / 'traces.db'}",
        ROUTEGRAPH_POOL_FILE=str(POOL),
        ROUTEGRAPH_LOG_DIR=str(tmp_path / "logs"),
    )
    return env


def test_cli_answers_paris_in_three_hops(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "app.cli", "ask", QUESTION, "--json"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=_env(tmp_path), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(done.stdout)
    assert "paris" in result["answer"].lower(), result
    assert len(result["hops"]) <= 3, [(h["node"], h["model"], h["sub_query"]) for h in result["hops"]]
    routes = [h for h in result["hops"] if h["node"] == "route"]
    assert len(routes) == 1 and routes[0]["error"] is None
    assert result["total_cost"] == pytest.approx(sum(h["cost"] for h in result["hops"]))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=_env(tmp_path))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, "routegraph serve exited"
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "routegraph serve did not come up"
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_server_answers_paris_to_the_openai_client(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=600)
    reply = client.chat.completions.create(
        model="router-r1", messages=[{"role": "user", "content": QUESTION}]
    )
    assert "paris" in (reply.choices[0].message.content or "").lower()
    summary = reply.model_extra["routegraph"] if reply.model_extra else {}
    assert summary["status"] == "ok" and len(summary["hops"]) <= 3, summary
