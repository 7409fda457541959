"""Throughput and latency of Router-R1 through `routegraph serve` vs in-process (service.aask).

Two pools, each with 1, 4 and 8 concurrent clients asking questions in turn:

- ``scripted``: pool models that answer instantly (a scripted chat model per entry, no network), so what is
  left is routegraph itself; the server's own overhead is its p50 minus the in-process p50 at one client.
- ``embedded``: the real local pool (llama.cpp), where model time dominates; the throughput ratio of 8
  clients to 1 shows what llama.cpp's parallel slots give on this machine.

Writes benchmarks/results/serve.md. ``python benchmarks/serve_throughput.py [--requests 4] [--scripted 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai
import uvicorn
from langchain_core.messages import BaseMessage

from app.config import PROJECT_ROOT, Settings
from app.pool import Pool
from app.server import create_app
from app.service import RouteGraphService

sys.path.insert(0, str(PROJECT_ROOT))  # the scripted models are the test suite's (tests/fakes.py)
from tests.fakes import SMALL, make_fake_pool, message_text, think_answer, think_route

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "How many legs does a spider have?"]
LEVELS = (1, 4, 8)
Ask = Callable[[str], Awaitable[None]]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def scripted_pool(calls: int) -> Pool:
    """Router-R1 in two steps (route, then answer) against a pool that replies at once."""

    def router(messages: list[BaseMessage]) -> str:
        # messages = system, question[, the trajectory so far]: answer once a pool reply is in it.
        if len(messages) > 2 and "<information>" in message_text(messages[-1]):
            return think_answer("Paris")
        return think_route(SMALL, "capital of France?")

    return make_fake_pool({"Fake-Router": [router] * calls, SMALL: ["Paris."] * calls})


async def _clients(concurrency: int, requests: int, ask: Ask) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def client(n: int) -> None:
        for i in range(requests):
            started = time.perf_counter()
            await ask(QUESTIONS[(n + i) % len(QUESTIONS)])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return time.perf_counter() - started, latencies


async def measure(
    service: RouteGraphService, requests: int
) -> dict[tuple[str, int], tuple[float, list[float]]]:
    """(path, clients) → (requests per second, latencies), server and in-process interleaved per level."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(service, max_concurrency=max(LEVELS))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    http = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=300)

    async def via_server(question: str) -> None:
        await http.chat.completions.create(
            model="router-r1", messages=[{"role": "user", "content": question}]
        )

    async def in_process(question: str) -> None:
        await service.aask(question)

    await via_server(QUESTIONS[0])  # warm-up: first connection, first run
    await in_process(QUESTIONS[0])
    results = {}
    for level in LEVELS:
        for name, ask in (("server", via_server), ("in-process", in_process)):
            elapsed, latencies = await _clients(level, requests, ask)
            results[(name, level)] = (len(latencies) / elapsed, latencies)
    server.should_exit = True
    await serving
    return results


def table(results: dict[tuple[str, int], tuple[float, list[float]]], unit: str) -> list[str]:
    scale = 1000 if unit == "ms" else 1
    rows = [
        f"| path | clients | requests | req/s | p50 {unit} | p95 {unit} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (name, level), (rate, latencies) in sorted(
        results.items(), key=lambda kv: (kv[0][0] != "server", kv[0][1])
    ):
        rows.append(
            f"| {name} | {level} | {len(latencies)} | {rate:.2f} "
            f"| {statistics.median(latencies) * scale:.1f} | {_percentile(latencies, 0.95) * scale:.1f} |"
        )
    return rows


async def main(requests: int, scripted_requests: int) -> str:
    lines = [
        "# routegraph serve vs in-process (Router-R1)",
        "",
        f"`python benchmarks/serve_throughput.py --requests {requests} --scripted {scripted_requests}` · "
        f"{time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · 2-core {platform.machine()} "
        "CPU. "
        "Each client asks its questions one after another; server and in-process runs alternate per level.",
    ]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/scripted.db", max_turns=1)
        pool = scripted_pool(calls=4 * scripted_requests * sum(LEVELS) + 16)
        with RouteGraphService.create(settings, pool=pool, start_servers=False) as service:
            scripted = await measure(service, scripted_requests)
        settings = Settings(database_url=f"sqlite:///{tmp}/embedded.db", max_turns=1, response_max_tokens=32)
        with RouteGraphService.create(settings) as service:
            embedded = await measure(service, requests)
        pool_name = Path(settings.pool_file).name

    overhead_ms = 1000 * (
        statistics.median(scripted[("server", 1)][1]) - statistics.median(scripted[("in-process", 1)][1])
    )
    per_run_ms = 1000 * statistics.median(scripted[("in-process", 1)][1])
    ratio = embedded[("server", 8)][0] / embedded[("server", 1)][0]
    lines += [
        "",
        f"## Scripted pool: models answer instantly ({scripted_requests} requests per client)",
        "",
        "What is left is routegraph: the graph (think → route → think → answer), four hops written to "
        "SQLite, and for the server path HTTP, JSON and the OpenAI response shape.",
        "",
        *table(scripted, "ms"),
        "",
        f"**Server overhead, p50 at one client: {overhead_ms:.1f} ms** (server p50 − in-process p50; the "
        f"in-process run itself takes {per_run_ms:.1f} ms). Target < 10 ms: "
        f"{'met' if overhead_ms < 10 else 'not met'}.",
        "",
        f"## Embedded pool `{pool_name}`: llama.cpp models ({requests} requests per client, max_turns 1, "
        "32-token replies)",
        "",
        *table(embedded, "s"),
        "",
        f"**Throughput through the server, 8 clients / 1 client: {ratio:.2f}×** (target ≥ 1.3×).",
        "",
        f"Load average (1 min) {load_before:.1f} before and {os.getloadavg()[0]:.1f} after: other jobs on "
        "the same cores slow both paths alike (they alternate), so compare rows, not runs.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4, help="Questions per client, embedded pool.")
    parser.add_argument("--scripted", type=int, default=50, help="Questions per client, scripted pool.")
    args = parser.parse_args()
    text = asyncio.run(main(args.requests, args.scripted))
    out = PROJECT_ROOT / "benchmarks" / "results" / "serve.md"
    Path(out).write_text(text)
    print(text)
    print(f"wrote {out}")
