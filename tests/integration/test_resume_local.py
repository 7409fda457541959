"""A `routegraph ask` process killed (SIGKILL) mid-run, then `routegraph traces resume`: embedded pool, real
SQLite file, real processes. The run continues from its LangGraph checkpoint on the same row."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTION = "What is the capital of France?"


def _env(db_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEGRAPH_")}
    env.update(
        ROUTEGRAPH_DATABASE_URL=f"sqlite:///{db_path}",
        ROUTEGRAPH_POOL_FILE=str(PROJECT_ROOT / "pools" / "tiny.yaml"),
        ROUTEGRAPH_MAX_TURNS="1",  # think → route → think/answer: a short run with a step after the kill
        ROUTEGRAPH_ROUTER_MAX_TOKENS="160",
        ROUTEGRAPH_RESPONSE_MAX_TOKENS="16",
        ROUTEGRAPH_REQUEST_TIMEOUT_S="60",
        # One thread per llama.cpp server: on a loaded 2-core machine two threads each thrash (10x slower).
        ROUTEGRAPH_LOCAL_THREADS="1",
    )
    return env


def _query(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path, timeout=30) as connection:
        return connection.execute(sql).fetchall()


@pytest.mark.timeout(180)
def test_killed_ask_resumes_on_the_same_run(tmp_path: Path) -> None:
    db_path = tmp_path / "traces.db"
    env = _env(db_path)
    command = [sys.executable, "-m", "app.cli"]
    asking = subprocess.Popen(
        [*command, "ask", "--json", QUESTION],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:  # until the first hop is committed
            assert asking.poll() is None, "routegraph ask ended before it could be killed"
            if db_path.exists():
                try:
                    if _query(db_path, "SELECT count(*) FROM hops")[0][0] >= 1:
                        break
                except sqlite3.OperationalError:  # the schema is not there yet
                    pass
            assert time.monotonic() < deadline, "no hop was stored in time"
            time.sleep(0.05)
        os.kill(asking.pid, signal.SIGKILL)
        asking.wait(timeout=10)
    finally:
        if asking.poll() is None:
            asking.kill()

    ((run_id, status),) = _query(db_path, "SELECT id, status FROM runs")
    assert status == "running"  # what a killed process leaves behind
    before = _query(db_path, f'SELECT node, started_at FROM hops WHERE run_id = {run_id} ORDER BY "index"')
    assert before and before[0][0] == "think"

    resumed = subprocess.run(
        [*command, "traces", "resume", "--json", str(run_id)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads(resumed.stdout)
    assert (result["run_id"], result["status"]) == (run_id, "ok")

    ((status, answer, cost, tokens_in, tokens_out),) = _query(
        db_path,
        f"SELECT status, answer, total_cost, input_tokens, output_tokens FROM runs WHERE id = {run_id}",
    )
    assert status == "ok" and answer == result["answer"]
    hops = _query(
        db_path,
        'SELECT "index", node, started_at, cost, input_tokens, output_tokens FROM hops '
        f'WHERE run_id = {run_id} ORDER BY "index"',
    )
    assert [h[0] for h in hops] == list(range(len(hops))) and len(hops) > len(before)
    assert [(h[1], h[2]) for h in hops[: len(before)]] == before  # the stored hops kept, none twice
    assert len({(h[1], h[2]) for h in hops}) == len(hops)
    assert cost == pytest.approx(sum(h[3] for h in hops)) == pytest.approx(result["total_cost"])
    assert (tokens_in, tokens_out) == (sum(h[4] for h in hops), sum(h[5] for h in hops))
    assert len(result["hops"]) == len(hops)
    assert _query(db_path, "SELECT count(*) FROM checkpoints")[0][0] == 0  # dropped once finished
    assert _query(db_path, "SELECT count(*) FROM runs")[0][0] == 1
