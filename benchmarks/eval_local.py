"""The embedded default pool, evaluated: every method on the shipped dev samples, and issue 17's targets.

    python benchmarks/eval_local.py            # evaluate (resumable), then write the report
    python benchmarks/eval_local.py --methods single   # the single models first (what the oracle needs)
    python benchmarks/eval_local.py --tune     # the tuning slices only: single models, for the descriptors

Methods: each single model, cheapest, largest, random, prompt-router, Router-R1, R2-Reasoner and the oracle,
through `routegraph eval`'s harness (app.evaluation), on disjoint slices of the samples in data/: items
0..20 of each file are the *tuning* slice (the pool's example performance is measured there, and the
router prompt was tried there), the *evaluation* slice follows (100 NQ-open, 100 HotpotQA, 50 GSM8K,
50 CommonsenseQA). Results: benchmarks/results/eval_local/*.jsonl (one record per method and item),
benchmarks/results/eval_local.md (tables, Pareto plot, targets with paired bootstrap intervals).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))  # run as a script from a checkout

from app.config import load_settings  # noqa: E402
from app.evaluation import baselines, intervals, runner  # noqa: E402
from app.evaluation.data import load_dataset  # noqa: E402
from app.evaluation.report import write_report  # noqa: E402
from app.service import RouteGraphService  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
OUT = RESULTS / "eval_local"
TUNE = 20
"""Items 0..TUNE of every sample are the tuning slice; evaluation starts after them."""
EVAL = {"nq": 100, "hotpotqa": 100, "gsm8k": 50, "csqa": 50}
REPLY_CAP = 256
"""Tokens per pool reply: a GSM8K solution in a few steps takes 50-150; the 0.5B model otherwise rambles to
the 512 default on some items, minutes each on a 2-core CPU."""
THREADS = 1
"""llama.cpp threads per model server. Two items run at once, so two servers decode at the same time: with 2
threads each on 2 cores their threads spin at every layer's barrier waiting for a descheduled peer, and a
0.5B reply slowed from ~25 to under 1 token/s; one thread each keeps ~8."""
DIFFER = ("gsm8k", "csqa")
"""The tasks where the pool's models differ (NQ / HotpotQA: every model near 0 EM)."""


def slices(tune: bool, datasets: list[str]) -> list[tuple[str, int, int]]:
    """(dataset, skip, limit) of the run, in the order given."""
    return [(name, 0, TUNE) if tune else (name, TUNE, EVAL[name]) for name in datasets]


async def evaluate(
    service: RouteGraphService, out: Path, tune: bool, methods: str, concurrency: int, datasets: list[str]
) -> None:
    for name, skip, limit in slices(tune, datasets):
        dataset = load_dataset(name, limit=limit, skip=skip)
        expanded = baselines.expand_methods("single" if tune else methods, service.pool)
        started = time.perf_counter()
        await runner.run_eval(service, dataset, expanded, out, concurrency=concurrency)
        print(f"{name}[{skip}:{skip + limit}] done in {time.perf_counter() - started:.0f} s", flush=True)


def records(out: Path) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """method → (dataset, id) → its record."""
    found: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for path in sorted(out.glob("*.jsonl")):
        for key, record in runner.read_records(path).items():
            found.setdefault(record["method"], {})[key] = record
    return found


def repeated_route_calls(database: Path, run_ids: list[int]) -> int:
    """Route calls a run made twice (same model, same query up to case and spacing): should be none."""
    if not database.exists() or not run_ids:
        return 0
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            f"SELECT run_id, model, sub_query FROM hops WHERE node = 'route' AND error IS NULL "
            f"AND run_id IN ({','.join('?' * len(run_ids))})",
            run_ids,
        ).fetchall()
    calls = Counter((run, model, " ".join((query or "").lower().split())) for run, model, query in rows)
    return sum(count - 1 for count in calls.values() if count > 1)


def compare(
    by_method: dict[str, dict[tuple[str, str], dict[str, Any]]], method: str, datasets: tuple[str, ...]
) -> dict[str, Any] | None:
    """``method`` against the strongest single model (``largest``) on the items both answered."""
    ours, strongest = by_method.get(method, {}), by_method.get("largest", {})
    keys = sorted(k for k in ours if k in strongest and k[0] in datasets)
    if not keys:
        return None
    accuracy = intervals.paired([ours[k]["correct"] for k in keys], [strongest[k]["correct"] for k in keys])
    cost = sum(ours[k]["cost"] for k in keys)
    pool_cost = sum(ours[k].get("pool_cost", ours[k]["cost"]) for k in keys)
    strongest_cost = sum(strongest[k]["cost"] for k in keys) or 1e-12
    strongest_acc = sum(strongest[k]["correct"] for k in keys) / len(keys)
    own_acc = sum(ours[k]["correct"] for k in keys) / len(keys)
    return {
        "n": len(keys),
        "accuracy": own_acc,
        "strongest": strongest_acc,
        "share": own_acc / strongest_acc if strongest_acc else float("nan"),
        "difference": accuracy,
        "cost_ratio": cost / strongest_cost,
        "pool_cost_ratio": pool_cost / strongest_cost,
        "max_turns": sum(str(ours[k].get("ended_by")).startswith("max turns") for k in keys) / len(keys),
        "run_ids": [ours[k]["run_id"] for k in keys if ours[k].get("run_id")],
    }


def targets(out: Path, database: Path) -> str:
    by_method = records(out)
    lines = ["", "## Issue 17's targets", ""]
    lines += [
        "Against the strongest single model (`largest` = Qwen-1.5B) on the same items; accuracy "
        "differences with paired bootstrap 95% intervals (1,000 resamples of the items). Cost ratio: the "
        "method's USD over the strongest model's; *pool* leaves out the router's own tokens, as Router-R1's "
        "cost does.",
        "",
        "| Method | Items | Accuracy | Strongest | Share | Difference [95% CI] | Cost ratio "
        "| Pool cost ratio | Ended by max turns |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for method in ("router-r1", "r2-reasoner", "prompt-router", "oracle"):
        for label, datasets in (("GSM8K + CSQA", DIFFER), ("all four", tuple(EVAL)), ("GSM8K", ("gsm8k",))):
            result = compare(by_method, method, datasets)
            if result is None:
                continue
            lines.append(
                f"| {method} · {label} | {result['n']} | {result['accuracy']:.3f} "
                f"| {result['strongest']:.3f} | {result['share']:.0%} | {result['difference']} "
                f"| {result['cost_ratio']:.2f} "
                f"| {result['pool_cost_ratio']:.2f} | {result['max_turns']:.1%} |"
            )
    r1 = compare(by_method, "router-r1", tuple(EVAL))
    if r1 is not None:
        repeats = repeated_route_calls(database, r1["run_ids"])
        lines += ["", f"Repeated route calls executed by Router-R1 runs: {repeats}."]
    return "\n".join(lines) + "\n"


def intro(started: str, wall_s: float | None, tune: bool) -> str:
    sizes = ", ".join(f"{size} {name}" for name, size in EVAL.items())
    timing = f" · wall time of the last invocation {wall_s / 60:.0f} min" if wall_s else ""
    slices = (
        f"Tuning slices: items 0..{TUNE} of each sample in `data/`, single models only (the pool's "
        "example performance is read from here). "
        if tune
        else f"Evaluation slices: {sizes} (items {TUNE} onwards of each sample in `data/`; items 0..{TUNE} "
        "are the tuning slice where the descriptors' example performance was measured and the router "
        "prompt tried). "
    )
    return (
        f"Embedded default pool (`pools/local.yaml`: Qwen2.5-Coder-0.5B routes; SmolLM2-135M, Qwen-0.5B and "
        f"Qwen-1.5B answer; prices notional, in proportion to size). {slices}Settings: the "
        "defaults (Router-R1 max 4 route calls, grammar-constrained router) but pool replies up to "
        f"{REPLY_CAP} tokens and {THREADS} llama.cpp thread per model server (two items at a time). "
        f"`python benchmarks/eval_local.py` · {started} · Python {platform.python_version()} · "
        f"{platform.machine()} CPU (2 cores), no GPU{timing}.\n\n`cheapest`, `largest` and `random` reuse "
        "the `single:<model>` answer to the same item; `oracle` is computed from the `single:*` records."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tune", action="store_true", help="Single models on the tuning slices only.")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--methods", default="all", help="As `routegraph eval --graph` (default all).")
    parser.add_argument(
        "--datasets",
        default=",".join(EVAL),
        help="Comma-separated, run in this order (default: all four; the report covers what is stored).",
    )
    parser.add_argument("--report-only", action="store_true", help="Write the report from stored results.")
    args = parser.parse_args()
    datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    if unknown := sorted(set(datasets) - set(EVAL)):
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(EVAL)}")
    out = args.out or (OUT.with_name("eval_local_tune") if args.tune else OUT)
    database = PROJECT_ROOT / "runs" / f"{out.name}.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d")
    wall: float | None = None
    if not args.report_only:
        settings = load_settings(
            database_url=f"sqlite:///{database}",
            request_timeout_s=900,
            response_max_tokens=REPLY_CAP,
            local_threads=THREADS,
        )
        clock = time.perf_counter()
        with RouteGraphService.create(settings) as service:
            asyncio.run(evaluate(service, out, args.tune, args.methods, args.concurrency, datasets))
        wall = time.perf_counter() - clock
    target = out.with_suffix(".md") if out.parent == RESULTS else out / "report.md"
    write_report(
        out, target, title="Evaluation on the embedded default pool", intro=intro(started, wall, args.tune)
    )
    if not args.tune:
        with target.open("a") as handle:
            handle.write(targets(out, database))
    print(f"wrote {target}")
    print(json.dumps({"wall_s": wall}))


if __name__ == "__main__":
    main()
