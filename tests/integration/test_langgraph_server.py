"""LangGraph's own server (``langgraph dev``, in memory) serving langgraph.json's graphs on the embedded pool,
driven with ``langgraph_sdk`` the way Studio and SDK clients drive it. No network, no LangSmith key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client

from app.config import PROJECT_ROOT
from app.pool import load_pool

pytest.importorskip(
    "langgraph_api", reason="needs the LangGraph in-memory server: pip install 'langgraph-cli[inmem]'"
)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

OFFLINE = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # the CLI's usage event
    "LANGGRAPH_NO_VERSION_CHECK": "true",  # the server's look-up of newer langgraph-api releases on PyPI
    "LANGSMITH_TRACING": "false",  # no traces sent to LangSmith, whatever the environment says
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``langgraph dev`` on a free port, run from a scratch directory (its .langgraph_api/ goes there)."""
    workdir = tmp_path_factory.mktemp("langgraph-dev")
    store = workdir / "routegraph-traces.db"
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ROUTEGRAPH_", "LANGSMITH_", "LANGCHAIN_"))
    }
    env.update(
        OFFLINE,
        PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        ROUTEGRAPH_DATABASE_URL=f"sqlite:///{store}",
        ROUTEGRAPH_MAX_TURNS="1",
        ROUTEGRAPH_RESPONSE_MAX_TOKENS="24",
        ROUTEGRAPH_ROUTER_MAX_TOKENS="96",
        ROUTEGRAPH_REQUEST_TIMEOUT_S="170",
    )
    command = [sys.executable, "-m", "langgraph_cli", "dev", "--config", str(PROJECT_ROOT / "langgraph.json")]
    command += ["--port", str(port), "--no-browser", "--no-reload"]
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"langgraph dev exited; log: {workdir / 'server.log'}"
            try:
                if httpx.get(f"{base}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "langgraph dev did not come up"
            time.sleep(0.5)
        yield base, store
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_both_graphs_are_served_with_a_json_context(server: tuple[str, Path]) -> None:
    client = get_sync_client(url=server[0])
    assistants = {a["graph_id"]: a for a in client.assistants.search()}
    assert set(assistants) == {"router-r1", "r2-reasoner"}
    for assistant in assistants.values():
        schemas = client.assistants.get_schemas(assistant["assistant_id"])
        assert set(schemas["context_schema"]["properties"]) == {"budget_usd", "max_turns"}
        assert "question" in schemas["input_schema"]["properties"]
    graph = client.assistants.get_graph(assistants["router-r1"]["assistant_id"])
    assert {"think", "route", "integrate", "answer", "force_answer"} <= {n["id"] for n in graph["nodes"]}


def test_router_r1_run_in_a_thread_returns_the_answer_and_hops(server: tuple[str, Path]) -> None:
    base, store = server
    client = get_sync_client(url=base, timeout=600)
    thread = client.threads.create()
    streamed: list[dict[str, Any]] = []
    for part in client.runs.stream(
        thread["thread_id"],
        "router-r1",
        input={"question": "What is the capital of France?"},
        context={"max_turns": 1, "budget_usd": 0.01},
        stream_mode="updates",
    ):
        assert part.event != "error", part.data
        if part.event == "updates":
            for update in part.data.values():
                streamed += (update or {}).get("hops", [])

    values = client.threads.get_state(thread["thread_id"])["values"]
    hops = values["hops"]
    assert values["answer"].strip()
    assert [h["node"] for h in hops] == [h["node"] for h in streamed]  # each hop streamed as it happened
    pool = load_pool(PROJECT_ROOT / "pools" / "local.yaml")
    assert hops[0]["node"] == "think" and hops[0]["model"] == pool.router.name and hops[0]["error"] is None
    routed = [h for h in hops if h["node"] == "route"]
    assert len(routed) == 1 and routed[0]["model"] in pool.names  # max_turns from the run's context
    for hop in hops:
        assert hop["input_tokens"] > 0 and hop["output_tokens"] > 0
        assert hop["cost"] == pytest.approx(
            pool.get(hop["model"]).cost(hop["input_tokens"], hop["output_tokens"])
        )
    assert client.runs.list(thread["thread_id"])[0]["status"] == "success"
    assert not store.exists()  # LangGraph Server keeps the record; routegraph's trace store is untouched


def test_a_bad_context_fails_the_run_with_the_reason(server: tuple[str, Path]) -> None:
    client = get_sync_client(url=server[0])
    thread = client.threads.create()
    errors = [
        part.data
        for part in client.runs.stream(
            thread["thread_id"], "router-r1", input={"question": "Hi?"}, context={"max_turns": 99}
        )
        if part.event == "error"
    ]
    assert errors and "max_turns" in str(errors[0])
