"""`routegraph serve` on the tiny pool when a model server dies: SIGKILL the SmolLM2 llama.cpp child (the
router's and the SmolLM2 candidate's server); it is reaped (no zombie), requests that need it get 503 at
once with Retry-After while it is down, /ready and /v1/models say so, and it is restarted and answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.config import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ASK = {"model": "router-r1", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
BACKOFF_S = 4  # the first restart waits this long: long enough to watch the outage from here


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def state(pid: int) -> str | None:
    """The process state letter ('Z' for a zombie), or None once the process is gone (reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def smollm2_child(serve_pid: int) -> int:
    found = [c for c in children(serve_pid) if "SmolLM2" in Path(f"/proc/{c}/cmdline").read_text()]
    assert len(found) == 1, f"expected one SmolLM2 server, found {found}"
    return found[0]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEGRAPH_")}
    env.update(
        ROUTEGRAPH_DATABASE_URL=f"sqlite:///{tmp_path / 'traces.db'}",
        ROUTEGRAPH_MAX_TURNS="1",
        ROUTEGRAPH_RESPONSE_MAX_TOKENS="16",
        ROUTEGRAPH_ROUTER_MAX_TOKENS="96",
        ROUTEGRAPH_LOCAL_RESTART_BACKOFF_S=str(BACKOFF_S),
        TMPDIR=str(tmp_path),  # the servers' logs
    )
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    command += ["--pool", str(PROJECT_ROOT / "pools" / "tiny.yaml")]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, "routegraph serve exited"
            try:
                return httpx.get(f"{base}/ready", timeout=10).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 180, "routegraph serve ready")
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_a_killed_model_server_is_reaped_refused_fast_and_restarted(
    served: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, process = served
    killed = smollm2_child(process.pid)
    os.kill(killed, signal.SIGKILL)
    time.sleep(0.3)  # the signal is delivered; the supervisor may or may not have looked yet

    started = time.monotonic()
    refused = httpx.post(f"{base}/v1/chat/completions", json=ASK, timeout=30)
    assert time.monotonic() - started < 1.0, "a request for a down model must fail fast"
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_down" and "is down, restarting; retry in" in error["message"]
    assert "killed by signal 9" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= BACKOFF_S + 30
    with httpx.stream("POST", f"{base}/v1/chat/completions", json={**ASK, "stream": True}) as stream:
        assert stream.status_code == 503  # refused before the stream's headers, not as an event after 200

    wait_for(lambda: state(killed) != "Z" and killed not in children(process.pid), 3, "reaped")
    ready = httpx.get(f"{base}/ready", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["endpoints"]["SmolLM2-135M-Router"] is False
    assert any("down, restarting" in reason for reason in ready.json()["not_ready"])
    listed = {m["id"]: m for m in httpx.get(f"{base}/v1/models").json()["data"]}
    assert listed["SmolLM2-135M-Instruct"]["status"] == "down"
    assert listed["router-r1"]["status"] == "down" and listed["Gemma-3-270M"]["status"] == "available"

    wait_for(lambda: httpx.get(f"{base}/ready", timeout=30).status_code == 200, 120, "restarted")
    answered = httpx.post(f"{base}/v1/chat/completions", json=ASK, timeout=240)
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"]
    restarted = smollm2_child(process.pid)
    assert restarted != killed
    assert all(state(child) != "Z" for child in children(process.pid))
