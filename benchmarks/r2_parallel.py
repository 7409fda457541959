"""R2-Reasoner: wall time of parallel vs sequential subtask execution on the embedded pool.

A fixed decomposition of 4 independent subtasks is passed through the graph input (``subtasks``, which
skips the decompose call), all allocated to SmolLM2-135M-Instruct (``fixed:``), so both modes make the
same calls: ``parallel=True`` sends all 4 in one wave (llama.cpp batches them over its slots),
``parallel=False`` sends one per wave. Runs alternate between modes; each is timed end to end (allocate,
the 4 subtasks, aggregate) and over the execute phase alone (first subtask start → last subtask end).

Measured for a grid of llama.cpp parallel slots per server (2, the default, and 4: one per subtask) and reply
caps (48 tokens, and 160: a paragraph, where decoding rather than prompt processing dominates and batching
has more to give). Writes benchmarks/results/r2_parallel.md.

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
GRID = ((2, 48), (4, 48), (2, 160), (4, 160))
"""(llama.cpp parallel slots per server, reply cap in tokens)."""
QUESTION = "Name one fact each about Paris, Rome, Berlin and Madrid."
SUBTASKS = [
    {
        "id": str(i),
        "text": f"Write a paragraph of about 100 words on the history of {city}.",
        "depends_on": [],
    }
    for i, city in enumerate(["Paris", "Rome", "Berlin", "Madrid"], start=1)
]
RESULTS = Path(__file__).parent / "results" / "r2_parallel.md"


async def _run(service: RouteGraphService, parallel: bool, max_tokens: int) -> tuple[float, float, list[Hop]]:
    context = R2Context(
        pool=service.pool,
        budget_usd=1.0,
        allocation=f"fixed:{MODEL}",
        response_max_tokens=max_tokens,
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


Samples = dict[bool, list[tuple[float, float, int]]]


async def _measure(service: RouteGraphService, repeats: int, max_tokens: int) -> Samples:
    # One event loop for every run: the pool's HTTP clients belong to the loop that made them.
    samples: Samples = {True: [], False: []}
    await _run(service, True, max_tokens)  # warm-up: weights into the page cache, prompt caches filled
    for _ in range(repeats):
        for parallel in (True, False):
            wall, phase, hops = await _run(service, parallel, max_tokens)
            samples[parallel].append((wall, phase, sum(h.output_tokens for h in hops)))
            print(f"parallel={parallel}: run {wall:.2f}s, execute phase {phase:.2f}s", flush=True)
    return samples


def _measure_config(slots: int, max_tokens: int, repeats: int) -> Samples:
    settings = Settings(
        database_url=f"sqlite:///{tempfile.mkdtemp()}/bench.db",
        replay="off",
        local_parallel=slots,
        local_ctx=4096 * slots,  # llama.cpp splits the context between slots: 4,096 tokens each
    )
    with RouteGraphService.create(settings) as service:
        service.pool.cache = None  # every call live and unrecorded: no replay cache in the timings
        return asyncio.run(_measure(service, repeats, max_tokens))


def main(repeats: int = REPEATS) -> None:
    med = statistics.median
    settings = Settings()
    lines = [
        "# R2-Reasoner: parallel vs sequential subtask execution",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `benchmarks/r2_parallel.py` on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores; embedded pool (llama.cpp, {settings.local_threads} threads per "
        "server).",
        "",
        f"Question with a fixed decomposition of 4 independent subtasks (graph input `subtasks`), all on "
        f"{MODEL} (`fixed:` allocation); {repeats} alternating repeats per mode after one warm-up run, for "
        "each configuration. Sequential = context `parallel=False` (one subtask per wave).",
        "",
        "| slots per server | reply cap | mode | median run s | runs s | median execute phase s "
        "| mean subtask tokens out | speed-up run / execute |",
        "|---:|---:|---|---:|---|---:|---:|---|",
    ]
    for slots, max_tokens in GRID:
        samples = _measure_config(slots, max_tokens, repeats)
        walls = {p: [s[0] for s in v] for p, v in samples.items()}
        phases = {p: [s[1] for s in v] for p, v in samples.items()}
        tokens = {p: statistics.mean(s[2] for s in v) for p, v in samples.items()}
        run_ratio = med(walls[False]) / med(walls[True])
        phase_ratio = med(phases[False]) / med(phases[True])
        for parallel, name in ((True, "parallel (4 in one wave)"), (False, "sequential (1 per wave)")):
            ratio = f"**{run_ratio:.2f}× / {phase_ratio:.2f}×**" if parallel else ""
            lines.append(
                f"| {slots} | {max_tokens} | {name} | {med(walls[parallel]):.2f} "
                f"| {', '.join(f'{w:.2f}' for w in walls[parallel])} | {med(phases[parallel]):.2f} "
                f"| {tokens[parallel]:.0f} | {ratio} |"
            )
        print("\n".join(lines[-2:]), flush=True)
    lines += [
        "",
        "Speed-up = sequential median / parallel median, for the whole run and for the execute phase. "
        "Target: ≥ 1.3× on a 2-core machine.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else REPEATS)
