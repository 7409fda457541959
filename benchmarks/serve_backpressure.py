"""`routegraph serve` under 16 and 32 concurrent clients on an embedded pool: requests completed, p50/p95
latency, and how many were refused with 429 (the queue was full) or failed otherwise.

The server runs as its own process (``python -m app.cli serve``) with its defaults but a queue of 16, so
that 32 clients overflow it: 4 runs at once (one per llama.cpp slot), 16 waiting, the rest refused at once
with 429 and a Retry-After. Clients do not retry: a 429 is counted, not hidden. Router-R1 with one route
call, 96-token router steps and 32-token replies.

Writes benchmarks/results/serve_concurrency.md.
``python benchmarks/serve_backpressure.py [--pool pools/tiny.yaml] [--requests 1] [--queue 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""This checkout: the server it starts runs this checkout's code, whichever routegraph is installed."""
LEVELS = (16, 32)
QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "How many legs does a spider have?"]


@dataclass
class Level:
    clients: int
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)  # completed requests (200)
    refused_s: list[float] = field(default_factory=list)  # 429s: how long the refusal took
    statuses: Counter[str] = field(default_factory=Counter)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_level(base: str, clients: int, requests: int) -> Level:
    level = Level(clients)

    async def client(http: httpx.AsyncClient, n: int) -> None:
        for i in range(requests):
            question = QUESTIONS[(n + i) % len(QUESTIONS)]
            body = {"model": "router-r1", "messages": [{"role": "user", "content": question}]}
            started = time.perf_counter()
            try:
                response = await http.post(f"{base}/v1/chat/completions", json=body)
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            took = time.perf_counter() - started
            level.statuses[status] += 1
            if status == "200":
                level.latencies.append(took)
            elif status == "429":
                level.refused_s.append(took)

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=900, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http, n) for n in range(clients)))
        level.elapsed_s = time.perf_counter() - started
    return level


def start_server(pool: Path, queue: int, database: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEGRAPH_")}
    env.update(
        ROUTEGRAPH_DATABASE_URL=database,
        ROUTEGRAPH_MAX_TURNS="1",
        ROUTEGRAPH_RESPONSE_MAX_TOKENS="32",
        ROUTEGRAPH_ROUTER_MAX_TOKENS="96",  # as the integration tests: bounded router steps, a bounded run
        ROUTEGRAPH_SERVER_MAX_QUEUE=str(queue),
    )
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--pool", str(pool)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise SystemExit("routegraph serve exited before it was ready")
        try:
            if httpx.get(f"{base}/ready", timeout=10).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.terminate()
            raise SystemExit("routegraph serve was not ready within 300 s")
        time.sleep(0.5)


def failures_note(levels: list[Level]) -> str:
    other = sum(v for level in levels for k, v in level.statuses.items() if k not in ("200", "429"))
    if other == 0:
        return "Every admitted request completed: none timed out or failed."
    return f"{other} admitted request(s) failed (see the table): not every failure became a 429."


def table(levels: list[Level]) -> list[str]:
    rows = [
        "| clients | sent | completed (200) | 429 | other failures | p50 s | p95 s | req/s "
        "| 429 answered in (p50) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        sent = sum(level.statuses.values())
        done = len(level.latencies)
        other = {k: v for k, v in level.statuses.items() if k not in ("200", "429")}
        others = ", ".join(f"{v}× {k}" for k, v in sorted(other.items())) or "0"
        p50 = f"{statistics.median(level.latencies):.1f}" if done else "–"
        p95 = f"{percentile(level.latencies, 0.95):.1f}" if done else "–"
        refused = f"{statistics.median(level.refused_s) * 1000:.0f} ms" if level.refused_s else "–"
        rows.append(
            f"| {level.clients} | {sent} | {done} | {len(level.refused_s)} | {others} | {p50} | {p95} "
            f"| {done / level.elapsed_s:.2f} | {refused} |"
        )
    return rows


async def main(pool: Path, requests: int, queue: int) -> str:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_server(pool, queue, f"sqlite:///{tmp}/traces.db")
        try:
            await run_level(base, 1, 1)  # warm-up: first connection, first run, prompt caches
            levels = [await run_level(base, clients, requests) for clients in LEVELS]
        finally:
            process.terminate()
            process.wait(timeout=30)
    load_after = os.getloadavg()
    inside = pool.resolve().is_relative_to(PROJECT_ROOT)
    shown_pool = pool.resolve().relative_to(PROJECT_ROOT) if inside else pool
    lines = [
        "# routegraph serve under 16 and 32 concurrent clients (backpressure)",
        "",
        f"`python benchmarks/serve_backpressure.py --pool {shown_pool} --requests {requests} "
        f"--queue {queue}` · {time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · "
        f"{os.cpu_count()}-core {platform.machine()} CPU · pool `{shown_pool}`.",
        "",
        f"The server: 4 runs at once (the default, one per llama.cpp slot), {queue} more waiting, "
        "429 beyond; Router-R1 with one route call, 96-token router steps, 32-token replies, "
        "per-entry timeouts at their defaults (llama.cpp 300 s). "
        f"Each client sends {requests} request(s) in turn and does not retry a 429. "
        "Latency is a completed request's, queueing included.",
        "",
        *table(levels),
        "",
        f"Load average (1 min) {load_before[0]:.1f} before and {load_after[0]:.1f} after: the machine's two "
        "cores were shared with other people's jobs (tests, training, other model servers) during the run, "
        "so absolute latencies are pessimistic and vary between runs. "
        f"At most 4 + {queue} requests are admitted at a time; the rest are refused at once with a "
        f"Retry-After. {failures_note(levels)}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", type=Path, default=PROJECT_ROOT / "pools" / "tiny.yaml")
    parser.add_argument("--requests", type=int, default=1, help="Requests per client at each level.")
    parser.add_argument("--queue", type=int, default=16, help="ROUTEGRAPH_SERVER_MAX_QUEUE for the run.")
    args = parser.parse_args()
    text = asyncio.run(main(args.pool, args.requests, args.queue))
    out = PROJECT_ROOT / "benchmarks" / "results" / "serve_concurrency.md"
    out.write_text(text)
    print(text)
    print(f"wrote {out}")
