"""Build the routers a benchmark asks for, fit them on train, sweep them in-mix and under task shift, write.

Modes: ``in-mix`` (fit on train, sweep on dev: the same task mix), ``loto`` (leave one task out, pooled over
tasks; classical routers only, each fitted 14 times) and ``reweighted`` (the in-mix picks, dev weighted to
another task mix). LLM routers run on a task-stratified dev slice, where every other router is evaluated too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.bench import leaderboard, report, shift
from app.bench.calibrate import Calibrated, RouterConfig, router_from_config
from app.bench.data import Query, stratified
from app.bench.embeddings import Embeddings
from app.bench.evidence import Evidence, EvidenceLLMRouter
from app.bench.leaderboard import Point
from app.bench.registry import CLASSICAL, ROUTERS, make
from app.bench.routers import LLMRouter, RandomRouter, Router
from app.pool import Pool, PoolError, load_pool

LLM_ROUTERS = ("llm-zero-shot", "llm-trained", "llm-evidence")
ALL = (*CLASSICAL, "llm-zero-shot")
MODES = ("in-mix", "loto", "reweighted")


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
    unknown = [n for n in names if n not in ROUTERS and n != "llm-trained"]
    if unknown:
        raise PoolError(f"unknown routers {unknown}; known: {', '.join([*ROUTERS, 'llm-trained'])}, all")
    return names


def parse_modes(spec: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in spec.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown modes {unknown or [spec]}; known: {', '.join(MODES)}")
    return modes


@dataclass
class Extras:
    """What some routers need beyond a name: embeddings, trained GGUFs, calibrated configs or targets."""

    embeddings: Embeddings | None = None
    router_gguf: str | None = None
    evidence_gguf: str | None = None
    evidence_k: int = 25
    lam: float = 0.05
    configs: Sequence[RouterConfig] = ()
    """Knobs calibrated beforehand (``--router-config``): used as they are."""
    self_calibrating: Sequence[tuple[str, str, float]] = ()
    """(router, metric, target): calibrated on whatever each fold fits on (the benchmark's table)."""
    folds: int = 5


def build(names: Sequence[str], pool: Pool, extras: Extras | None = None) -> list[Router]:
    extras = extras or Extras()
    routers: list[Router] = []
    for name in names:
        if name == "single":
            routers += leaderboard.select_singles(pool)
        elif name == "random":
            routers.append(RandomRouter(seed=0))
        elif name == "llm-zero-shot":
            routers.append(LLMRouter(pool))
        elif name == "llm-trained":
            if not extras.router_gguf:
                raise PoolError("llm-trained needs --router-gguf PATH (a trained router's .gguf)")
            routers.append(LLMRouter.trained(pool, extras.router_gguf))
        elif name == "llm-evidence":
            if not extras.evidence_gguf:
                raise PoolError("llm-evidence needs --evidence-gguf PATH (a router trained with evidence)")
            trained = LLMRouter.trained(pool, extras.evidence_gguf)
            evidence = Evidence(extras.embeddings or Embeddings(), extras.evidence_k, extras.lam)
            routers.append(EvidenceLLMRouter(trained.pool, evidence))
        else:
            routers.append(make(name, extras.embeddings))
    routers += [router_from_config(c, extras.embeddings) for c in extras.configs]
    routers += [
        Calibrated(r, m, t, extras.embeddings, extras.folds)  # type: ignore[arg-type]
        for r, m, t in extras.self_calibrating
    ]
    return routers


@dataclass
class BenchResult:
    curves: dict[str, list[Point]]
    subset: dict[str, list[Point]]
    n_dev: int
    n_subset: int
    malformed: dict[str, int]
    loto: dict[str, list[Point]] = field(default_factory=dict)
    modes: tuple[str, ...] = ("in-mix",)
    mix: dict[str, float] | None = None
    """The re-weighted view's task mix (None: uniform)."""

    def views(self) -> list[report.View]:
        views = [report.View("in-mix", self.curves)]
        if "loto" in self.modes and self.loto:
            views.append(report.View("leave-one-task-out", self.loto))
        if "reweighted" in self.modes:
            tasks = next(iter(self.curves.values()))[0].tasks
            name = "re-weighted (uniform task mix)" if self.mix is None else "re-weighted (given task mix)"
            views.append(report.View(name, self.curves, shift.mix_weights(tasks, self.mix)))
        return views


async def run(
    routers: Sequence[Router],
    train: Sequence[Query],
    dev: Sequence[Query],
    pool: Pool,
    llm_limit: int,
    *,
    modes: Sequence[str] = ("in-mix",),
    loto: tuple[Callable[[], Sequence[Router]], Sequence[Query], Pool] | None = None,
    mix: dict[str, float] | None = None,
    on_fold: Callable[[str], None] | None = None,
) -> BenchResult:
    """Classical routers sweep all of dev; LLM routers run on a task-stratified ``llm_limit`` slice of dev,
    where every other router is evaluated too. ``loto`` = (classical router factory, queries, their pool)."""
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
            router.prepare(head)
            subset[router.label] = [await leaderboard.evaluate(router, head, pool)]
    malformed = {r.label: r.malformed for r in llms}
    loto_curves: dict[str, list[Point]] = {}
    if "loto" in modes and loto is not None:
        factory, queries, loto_pool = loto
        loto_curves = await shift.loto_curves(factory, queries, loto_pool, on_fold)
    n_subset = len(head) if llms else 0
    return BenchResult(curves, subset, len(dev), n_subset, malformed, loto_curves, tuple(modes), mix)


def write(result: BenchResult, out: Path, title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    text = leaderboard.markdown(result.curves, result.n_dev, title, result.subset, result.n_subset)
    if result.malformed:
        text += (
            "\nMalformed LLM-router replies (fell back to the cheapest model): "
            + ", ".join(f"{k} {v}/{result.n_subset}" for k, v in result.malformed.items())
            + "\n"
        )
    views = result.views()
    if len(views) > 1 or result.modes != ("in-mix",):
        text += "\n## In-mix and under task shift (95% bootstrap intervals)\n\n"
        labels = [label for label in result.curves if not label.startswith("single:")]
        text += "\n".join(report.side_by_side(views, labels))
        for view in views:
            text += "\n" + "\n".join(report.view_table(view))
    calibrated = [label for label in result.curves if "@" in label]
    if calibrated:
        text += "\n## Calibrated routers: target vs reached on the test queries\n\n"
        text += "\n".join(report.calibration_table(views, calibrated))
    table = out / "recorded_routing.md"
    table.write_text(text)
    written = [table, *leaderboard.plot(result.curves, out, title)]
    if result.loto:
        written += leaderboard.plot(result.loto, out, f"{title}: leave-one-task-out", "recorded_routing_loto")
    if result.subset:
        subtitle = f"{title}: LLM routers ({result.n_subset} dev queries)"
        written += leaderboard.plot(result.subset, out, subtitle, "recorded_routing_llm")
    return written


def run_sync(
    routers: Sequence[Router],
    train: Sequence[Query],
    dev: Sequence[Query],
    pool: Pool,
    llm_limit: int,
    **kwargs: Any,
) -> BenchResult:
    return asyncio.run(run(routers, train, dev, pool, llm_limit, **kwargs))
