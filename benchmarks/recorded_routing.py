"""Routing on recorded outcomes of 9 LLMs, in one command: train the allocation router, then the leaderboard.

1. Train (``training/recipes/allocate_cpu.yaml``): SFT warm start, then GRPO on recorded score − λ·cost,
   on the train split only.
2. Leaderboard on the dev split: every classical router on all of dev with its λ sweep; the LLM routers
   (zero-shot, warm start only, warm start + GRPO) on a task-stratified dev slice, where every other router
   is evaluated too, so their rows compare like with like.
3. The training curves and a check of the issue's targets, computed from the slice.

    python benchmarks/recorded_routing.py [--reuse runs/allocate] [--llm-limit 280]

Writes benchmarks/results/recorded_routing.md and the plots beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from app.bench import run
from app.bench.data import load_queries, split
from app.bench.leaderboard import Point, summarise
from app.bench.routers import LLMRouter
from app.config import PROJECT_ROOT, Settings
from app.pool.local_servers import LocalServers
from training import allocate
from training.common import load_recipe

DATA = PROJECT_ROOT / "data" / "routing_outcomes" / "train.jsonl"
POOL = PROJECT_ROOT / "pools" / "recorded_9llm.yaml"
RECIPE = PROJECT_ROOT / "training" / "recipes" / "allocate_cpu.yaml"
RESULTS = Path(__file__).parent / "results"


def train(workdir: Path) -> float:
    started = time.perf_counter()
    allocate.main(str(RECIPE), {"output_dir": str(workdir), "database_url": f"sqlite:///{workdir}/train.db"})
    return time.perf_counter() - started


def steps(workdir: Path, stage: str) -> list[dict[str, Any]]:
    return list(json.loads((workdir / stage / "metrics.json").read_text())["steps"])


def curve_tables(workdir: Path) -> list[str]:
    sft_steps = [s for s in steps(workdir, "sft") if "loss" in s]
    grpo_steps = [s for s in steps(workdir, "grpo") if "reward" in s]
    lines = ["", "## Training curves", "", "SFT warm start (loss on the route step's tokens):", ""]
    lines += ["| step | loss | token accuracy |", "|---:|---:|---:|"]
    lines += [f"| {s['step']} | {s['loss']:.3f} | {s.get('mean_token_accuracy', 0):.3f} |" for s in sft_steps]
    lines += ["", "GRPO (means over each step's completions):", ""]
    lines += [
        "| step | reward | allocation reward (score − λ·cost) | format rate | groups with no reward spread |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s['step']} | {s['reward']:.3f} | {s['rewards/allocation/mean']:.3f} | {s['format_rate']:.2f} "
        f"| {s.get('frac_reward_zero_std', 0):.2f} |"
        for s in grpo_steps
    ]
    return lines


def targets(subset: dict[str, list[Point]], lam: float) -> list[str]:
    """The issue's three targets, read off the slice every router was evaluated on."""
    best = summarise(subset).best_single
    trained, zero_shot, oracle = subset["llm-trained"][0], subset["llm-zero-shot"][0], subset["oracle"][0]
    knn = min(subset["knn"], key=lambda p: abs(p.knob - lam))
    way = (trained.score - best.score) / (oracle.score - best.score) if oracle.score > best.score else 0.0

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    return [
        "",
        "## Targets (on the slice)",
        "",
        f"- Beat the best single model ({best.label}, {best.score:.3f} at ${best.price:.3f}) at ≤ 50% of its "
        f"price: trained router {trained.score:.3f} at ${trained.price:.3f} — "
        f"{verdict(trained.score > best.score and trained.price <= 0.5 * best.price)}.",
        f"- ≥ 60% of the way from the best single model to the oracle ({oracle.score:.3f}): "
        f"{100 * way:.0f}% — {verdict(way >= 0.6)}.",
        f"- Beat the zero-shot LLM router ({zero_shot.score:.3f} at ${zero_shot.price:.3f}): "
        f"{verdict(trained.score > zero_shot.score)}; match or beat kNN at the same λ = {knn.knob:g} "
        f"({knn.score:.3f} at ${knn.price:.3f}): {verdict(trained.score >= knn.score)}.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", type=Path, help="a finished training folder (skip step 1)")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "runs" / "allocate")
    parser.add_argument("--llm-limit", type=int, default=280, help="dev queries for the LLM routers")
    args = parser.parse_args()
    workdir = args.reuse or args.workdir
    train_s = None if args.reuse else train(workdir)

    pool = run.recorded_pool(POOL, DATA)
    train_queries, dev = split(load_queries(DATA))
    routers = run.build(run.parse_routers("all"), pool)
    routers += [
        LLMRouter.trained(pool, str(workdir / "sft" / "final" / "router.gguf"), "llm-sft-only"),
        LLMRouter.trained(pool, str(workdir / "grpo" / "final" / "router.gguf"), "llm-trained"),
    ]
    servers = LocalServers(Settings())
    started = time.perf_counter()
    try:
        for router in routers:
            if isinstance(router, LLMRouter):
                servers.start_for(router.pool)
        result = run.run_sync(routers, train_queries, dev, pool, args.llm_limit)
    finally:
        servers.stop_all()
    bench_s = time.perf_counter() - started
    title = f"Routing on recorded outcomes of {len(pool.models)} LLMs"
    written = run.write(result, RESULTS, title)

    recipe = load_recipe(allocate.AllocateRecipe, RECIPE)
    table = written[0]
    text = table.read_text()
    text += "\n".join(
        [
            "",
            "## How this was made",
            "",
            f"`python benchmarks/recorded_routing.py` · {time.strftime('%Y-%m-%d')} · Python "
            f"{platform.python_version()} · {platform.machine()} CPU, no GPU · training "
            + (f"{train_s / 60:.0f} min" if train_s else f"reused from {workdir}")
            + f", leaderboard {bench_s / 60:.0f} min.",
            "",
            "Trained router: the bundled SmolLM2-135M, only its last "
            f"{recipe.train_last_layers} blocks learn; SFT warm start {recipe.sft_steps} steps × "
            f"{recipe.per_device_train_batch_size} rows (targets: "
            f"the task's best-value model on train, λ = {recipe.lam:g}, thought naming the task kind), then "
            f"GRPO {recipe.max_steps} steps × {recipe.num_generations} completions per prompt on per-query "
            "recorded rewards. It sees the query's first 400 characters and the 9 descriptors, and decodes "
            "under the graph's step grammar (llama.cpp). `llm-sft-only` is the warm start before GRPO.",
            *curve_tables(workdir),
            *targets(result.subset, recipe.lam),
            "",
        ]
    )
    table.write_text(text)
    print("wrote", ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
