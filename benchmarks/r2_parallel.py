"""R2-Reasoner: wall time of parallel vs sequential subtask execution on the embedded pool.

A fixed decomposition of 4 independent subtasks is passed through the graph input (``subtasks``, which
skips the decompose call), all allocated to SmolLM2-135M-Instruct (``fixed:``), so both modes make the
same calls: ``parallel=True`` sends all 4 in one wave (llama.cpp batches them over its slots),
``parallel=False`` sends one per wave. Runs alternate between modes; each is timed end to end (allocate,
the 4 subtasks, aggregate) and over the execute phase alone (first subtask start → last subtask end).
Writes benchmarks/results/r2_parallel.md.

    .venv/bin/python benchmarks/r2_parallel.py [repeats]
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app.config import Settings
from app.service import RouteGraphService
from graphs.hops import Hop
from graphs.r2_reasoner.graph import graph
from graphs.r2_reasoner.state import R2Context

MODEL = "SmolLM2-135M-Instruct"
REPEATS = 4
MAX_TOKENS = 48
QUESTION = "Name one fact each about Paris, Rome, Berlin and Madrid."
SUBTASKS = [
    {"id": str(i), "text": f"Describe the city of {city} in two sentences.", "depends_on": []}
    for i, city in enumerate(["Paris", "Rome", "Berlin", "Madrid"], start=1)
]
RESULTS = Path(__file__).parent / "results" / "r2_parallel.md"


async def _run(service: RouteGraphService, parallel: bool) -> tuple[float, float, list[Hop]]:
    context = R2Context(
        pool=service.pool,
        budget_usd=1.0,
        allocation=f"fixed:{MODEL}",
        response_max_tokens=MAX_TOKENS,
        parallel=parallel,
    )
    started = time.perf_counter()
    result: dict[str, Any] = await graph.ainvoke(
        {"question": QUESTION, "subtasks": SUBTASKS}, context=context
    )
    wall = time.perf_counter() - started
    executes = [h for h in result["hops"] if h.node == "execute"]
    assert len(executes) == 4 and all(h.error is None for h in executes), executes
    phase = max(h.started_at + h.latency_s for h in executes) - min(h.started_at for h in executes)
    return wall, phase, executes


async def _measure(service: RouteGraphService, repeats: int) -> dict[bool, list[tuple[float, float, int]]]:
    # One event loop for every run: the pool's HTTP clients belong to the loop that made them.
    samples: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    await _run(service, True)  # warm-up: weights into the page cache, prompt caches filled
    for _ in range(repeats):
        for parallel in (True, False):
            wall, phase, hops = await _run(service, parallel)
            samples[parallel].append((wall, phase, sum(h.output_tokens for h in hops)))
            print(f"parallel={parallel}: run {wall:.2f}s, execute phase {phase:.2f}s", flush=True)
    return samples


def main(repeats: int = REPEATS) -> None:
    settings = Settings(database_url=f"sqlite:///{tempfile.mkdtemp()}/bench.db", replay="off")
    with RouteGraphService.create(settings) as service:
        service.pool.cache = None  # every call live and unrecorded: no replay cache in the timings
        samples = asyncio.run(_measure(service, repeats))
    walls = {p: [s[0] for s in v] for p, v in samples.items()}
    phases = {p: [s[1] for s in v] for p, v in samples.items()}
    tokens = {p: statistics.mean(s[2] for s in v) for p, v in samples.items()}
    med = statistics.median
    run_ratio = med(walls[False]) / med(walls[True])
    phase_ratio = med(phases[False]) / med(phases[True])
    lines = [
        "# R2-Reasoner: parallel vs sequential subtask execution",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `benchmarks/r2_parallel.py` on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores; embedded pool (llama.cpp, {settings.local_threads} threads, "
        f"{settings.local_parallel} parallel slots per server).",
        "",
        f"Question with a fixed decomposition of 4 independent subtasks (graph input `subtasks`), all on "
        f"{MODEL} (`fixed:` allocation), replies capped at {MAX_TOKENS} tokens; {repeats} alternating "
        f"repeats per mode after one warm-up run. Sequential = context `parallel=False` "
        "(one subtask per wave).",
        "",
        "| mode | median run s | runs s | median execute phase s | mean subtask tokens out |",
        "|---|---|---|---|---|",
    ]
    for parallel, name in ((True, "parallel (4 in one wave)"), (False, "sequential (1 per wave)")):
        lines.append(
            f"| {name} | {med(walls[parallel]):.2f} | {', '.join(f'{w:.2f}' for w in walls[parallel])} | "
            f"{med(phases[parallel]):.2f} | {tokens[parallel]:.0f} |"
        )
    lines += [
        "",
        f"**Speed-up (sequential / parallel, medians): whole run {run_ratio:.2f}×, "
        f"execute phase {phase_ratio:.2f}×.**",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else REPEATS)
