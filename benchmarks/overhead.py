"""Graph + storage overhead per hop on the embedded pool, as a ratio to the model time it wraps.

Measures, in one run on the same servers:
  1. the raw `ChatOpenAI` call a route hop makes (the baseline);
  2. the same call through `Pool.ask` (client wrapper, cost accounting);
  3. whole Router-R1 runs through the service (graph, hop events, SQLite commits), where overhead per hop is
     (run wall time − sum of the model calls' own latencies) / hops;
  4. the router's decode speed with and without its GBNF action grammar.
Writes benchmarks/results/overhead_<pool>.md for the configured pool (`ROUTEGRAPH_POOL_FILE`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from langchain_openai import ChatOpenAI

from app.config import Settings, shown_path
from app.service import RouteGraphService
from graphs.router_r1 import prompts, rules

REPEATS = 8
QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "How many legs does a spider have?",
    "What is the largest planet in the solar system?",
    "In which year did the Berlin Wall fall?",
]
WARM_UP = "What colour is the sky on a clear day?"
RESULTS = Path(__file__).parent / "results"
"""Where ``overhead_<pool file stem>.md`` goes: one report per pool measured."""


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def _raw_and_pool(service: RouteGraphService) -> tuple[list[float], list[float]]:
    entry = service.pool.cheapest()
    raw = ChatOpenAI(
        base_url=service.pool.base_url(entry), api_key="x", model=entry.served_id, max_tokens=16,
        temperature=0.0, max_retries=0,
    )  # fmt: skip
    messages = [("system", prompts.POOL_MODEL_SYSTEM), ("human", "What is the capital of France?")]
    raw_times, pool_times = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        await raw.ainvoke(messages)
        raw_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        await service.pool.ask(entry.name, messages[1][1], system=messages[0][1], max_tokens=16)
        pool_times.append(time.perf_counter() - started)
    return raw_times, pool_times


async def _grammar_speed(service: RouteGraphService) -> tuple[float, float]:
    """Router decode tokens/s for one step, free versus under the action grammar."""
    pool, router = service.pool, service.pool.router
    prompt = await pool.render_chat(router, prompts.router_messages(QUESTIONS[0], pool.models))
    await pool.complete(router, prompt, max_tokens=1)  # the prompt is cached from here on, for both
    variants = [None, {"grammar": rules.step_grammar(pool.names)}]
    tokens, seconds = [0, 0], [0.0, 0.0]
    for _ in range(4):  # interleaved, so drift hits both alike
        for i, extra in enumerate(variants):
            call = await pool.complete(router, prompt, max_tokens=96, extra_body=extra)
            tokens[i] += call.output_tokens
            seconds[i] += call.latency_s
    return tokens[0] / seconds[0], tokens[1] / seconds[1]


def _run_overhead(service: RouteGraphService, question: str) -> tuple[float, float, int]:
    """One Router-R1 run: (wall time − its hops' own latencies, the hops' latencies, hops), seconds."""
    started = time.perf_counter()
    result = service.ask(question)
    wall = time.perf_counter() - started
    model_time = sum(h.latency_s for h in result.hops)
    return wall - model_time, model_time, len(result.hops)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/bench.db")
        with RouteGraphService.create(settings) as service:
            raw_times, pool_times = asyncio.run(_raw_and_pool(service))
            free_tps, grammar_tps = asyncio.run(_grammar_speed(service))
            # The process's first run imports and compiles the graph module (once per process): it is
            # reported on its own, not as per-hop overhead.
            first_overhead, _, first_hops = _run_overhead(service, WARM_UP)
            runs = [_run_overhead(service, question) for question in QUESTIONS]
            pool = service.pool
    per_hop_overheads = [overhead / hops for overhead, _, hops in runs]
    shares = [overhead / model_time for overhead, model_time, _ in runs]
    hop_counts = [hops for _, _, hops in runs]

    raw_ms, pool_ms = _median_ms(raw_times), _median_ms(pool_times)
    pool_line = (
        f"`{settings.pool_file.name}`: {pool.router.name} routes {', '.join(pool.names)} (llama.cpp); "
        f"the raw and `Pool.ask` calls go to {pool.cheapest().name}"
    )
    overhead_ms = _median_ms(per_hop_overheads)
    pooled_ms = sum(overhead for overhead, _, _ in runs) / sum(hop_counts) * 1000
    share = statistics.median(shares)
    lines = [
        "# Graph + storage overhead per hop (embedded pool)",
        "",
        f"Command: `ROUTEGRAPH_POOL_FILE={shown_path(settings.pool_file)} python benchmarks/overhead.py`"
        f" · {time.strftime('%Y-%m-%d')} · Python {sys.version.split()[0]} · {os.cpu_count()}-core CPU"
        f" · load average (1 min) {os.getloadavg()[0]:.1f} at the end: other jobs on the same cores add"
        " to the overhead (it is wall time), not to the model time",
        f"· {pool_line}",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| raw `ChatOpenAI` call (route hop's request, 16 tokens), median of {REPEATS} | {raw_ms:.1f} ms |",
        f"| same call through `Pool.ask` | {pool_ms:.1f} ms (ratio {pool_ms / raw_ms:.3f}) |",
        f"| Router-R1 runs through the service (graph + SQLite per hop), {len(shares)} runs, "
        f"{sum(hop_counts)} hops | median overhead {overhead_ms:.2f} ms per hop |",
        f"| same runs pooled: all runs' overhead / all their hops | {pooled_ms:.2f} ms per hop |",
        "| per run: hops, overhead per hop | "
        + ", ".join(f"{n} hops {o * 1000:.1f} ms" for o, n in zip(per_hop_overheads, hop_counts, strict=True))
        + " |",
        "| the process's first run (imports and compiles the graph; not in the rows above) | "
        f"{first_hops} hops, {first_overhead * 1000:.0f} ms overhead in all |",
        f"| overhead as a share of model time (median over runs) | {share * 100:.2f} % |",
        f"| router decode speed, free / under the action grammar | {free_tps:.0f} / {grammar_tps:.0f} tok/s "
        f"(ratio {grammar_tps / free_tps:.2f}) |",
        "",
        "Overhead per hop = (run wall time − the sum of each hop's own latency) / hops. It includes",
        "LangGraph's step bookkeeping and the checkpoint it saves after every step (what `traces resume`",
        "restarts from), building hop events, committing each hop and each reply (the replay cache) to",
        "SQLite (WAL), finishing the run row, and handing hops to the calling thread. Rendering the",
        "router's prompt on its server (`/apply-template`) is router time, counted in its first hop.",
        "",
        f"Targets: < 5 ms per hop → {'met' if overhead_ms < 5 else 'NOT met'}; "
        f"< 5 % of model time → {'met' if share < 0.05 else 'NOT met'}.",
    ]
    out = RESULTS / f"overhead_{settings.pool_file.stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
