"""Build the routers a benchmark asks for, fit them on train, sweep them on dev, write table and plot."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.bench import leaderboard
from app.bench.data import Query, stratified
from app.bench.leaderboard import Point
from app.bench.routers import CLASSICAL, REGISTRY, LLMRouter, RandomRouter, Router
from app.pool import Pool, PoolError, load_pool

LLM_ROUTERS = ("llm-zero-shot", "llm-trained")
ALL = (*CLASSICAL, "llm-zero-shot")


def recorded_pool(pool_file: Path, data: Path) -> Pool:
    """A pool file whose recorded models replay ``data`` (the outcome file the benchmark reads)."""
    loaded = load_pool(pool_file)
    models = [
        m.model_copy(update={"outcomes": str(data.resolve())}) if m.backend == "recorded" else m
        for m in loaded.models
    ]
    return type(loaded)(loaded.router, models, loaded.source)


def parse_routers(spec: str) -> list[str]:
    """'all', or a comma list of registry names (and 'llm-trained')."""
    names = list(ALL) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in REGISTRY and n != "llm-trained"]
    if unknown:
        raise PoolError(f"unknown routers {unknown}; known: {', '.join([*REGISTRY, 'llm-trained'])}, all")
    return names


def build(names: Sequence[str], pool: Pool, router_gguf: str | None = None) -> list[Router]:
    routers: list[Router] = []
    for name in names:
        if name == "single":
            routers += leaderboard.select_singles(pool)
        elif name == "random":
            routers.append(RandomRouter(seed=0))
        elif name == "llm-zero-shot":
            routers.append(LLMRouter(pool))
        elif name == "llm-trained":
            if not router_gguf:
                raise PoolError("llm-trained needs --router-gguf PATH (a trained router's .gguf)")
            routers.append(LLMRouter.trained(pool, router_gguf))
        else:
            routers.append(REGISTRY[name]())
    return routers


@dataclass
class BenchResult:
    curves: dict[str, list[Point]]
    subset: dict[str, list[Point]]
    n_dev: int
    n_subset: int
    malformed: dict[str, int]


async def run(
    routers: Sequence[Router], train: Sequence[Query], dev: Sequence[Query], pool: Pool, llm_limit: int
) -> BenchResult:
    """Classical routers sweep all of dev; LLM routers run on a task-stratified ``llm_limit`` slice of dev,
    where every other router is evaluated too."""
    classical = [r for r in routers if not isinstance(r, LLMRouter)]
    llms = [r for r in routers if isinstance(r, LLMRouter)]
    for router in routers:
        router.fit(train, pool.models)
    curves = {r.label: await leaderboard.sweep(r, dev, pool) for r in classical}
    subset: dict[str, list[Point]] = {}
    head = stratified(dev, llm_limit)
    if llms:
        for router in classical:
            subset[router.label] = await leaderboard.sweep(router, head, pool)
        for router in llms:
            subset[router.label] = [await leaderboard.evaluate(router, head, pool)]
    malformed = {r.label: r.malformed for r in llms}
    return BenchResult(curves, subset, len(dev), len(head) if llms else 0, malformed)


def write(result: BenchResult, out: Path, title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    text = leaderboard.markdown(result.curves, result.n_dev, title, result.subset, result.n_subset)
    if result.malformed:
        text += (
            "\nMalformed LLM-router replies (fell back to the cheapest model): "
            + ", ".join(f"{k} {v}/{result.n_subset}" for k, v in result.malformed.items())
            + "\n"
        )
    table = out / "recorded_routing.md"
    table.write_text(text)
    written = [table, *leaderboard.plot(result.curves, out, title)]
    if result.subset:
        subtitle = f"{title}: LLM routers ({result.n_subset} dev queries)"
        written += leaderboard.plot(result.subset, out, subtitle, "recorded_routing_llm")
    return written


def run_sync(
    routers: Sequence[Router], train: Sequence[Query], dev: Sequence[Query], pool: Pool, llm_limit: int
) -> BenchResult:
    return asyncio.run(run(routers, train, dev, pool, llm_limit))
