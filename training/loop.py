"""The learning loop on a real signal: ``routegraph train loop --recipe training/recipes/loop_cpu.yaml``.

Stored traces → GRPO → a router that answers more questions right, in stages; each skips what an earlier
invocation finished, so re-running the same recipe resumes:

a. collect — every pool model answers each train question (``single:<model>`` runs, the gold answer as
   feedback: they fill the replay cache and say which model was right), and the current router too;
b. pick — the questions where the pool disagrees (on the others a GRPO group has no reward spread);
c. SFT warm start of the router to train: a first step to the cheapest model that was right;
d. GRPO per α from there, rollouts served from the replay cache (live calls on a miss);
e. export to GGUF (the training session does it) and ``<output_dir>/router.yaml`` serving it;
f. evaluate every router on held-out questions no stage trained on, beside the single-model baselines;
g. the report (:mod:`training.loop_report`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.pool import load_pool
from storage import db
from training import grpo, sft
from training.common import TrainingSession, load_recipe, resolve_path
from training.grpo import GRPORecipe
from training.loop_data import (
    PICKS,
    check_disjoint,
    grpo_rows,
    load_slice,
    outcome_table,
    parse_slice,
    pick,
    source_runs,
    warm_start_rows,
)
from training.loop_eval import Serving, answer, evaluate, singles
from training.loop_report import LoopResults, render


@dataclass
class LoopRecipe(GRPORecipe):
    """GRPO's keys (``max_steps``, ``num_generations``, ``temperature``… apply to each α's run) plus the
    loop's own. Slices are ``name[start:stop]`` of a sample name or QA file."""

    pool_file: str = "pools/local.yaml"
    data: str = "traces"
    """Not a loop key: the loop trains on the stored runs of its ``train`` questions."""
    limit: int | None = None
    output_dir: str = "runs/loop"
    train: list[str] = field(default_factory=lambda: ["gsm8k[120:240]", "csqa[70:100]"])
    held_out: list[str] = field(default_factory=lambda: ["gsm8k[20:120]", "csqa[20:70]"])
    report_only: list[str] = field(default_factory=lambda: ["nq[20:70]", "hotpotqa[20:70]"])
    """Evaluated and reported, but not in the held-out targets (the pool scores near 0 on them)."""
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.3])
    """One GRPO run per α, each from the warm start."""
    serve_alpha: float | None = None
    """The α whose router ``router.yaml`` serves (default: the first). Chosen before evaluation, never by
    its held-out score."""
    router_checkpoint: str | None = None
    """The current router (None: the pool's own): it answers the train questions and is evaluated."""
    evaluate_current: bool = True
    """The current router is evaluated on the held-out questions beside the untrained and trained ones
    (on a CPU its live steps are the evaluation's slowest part)."""
    collect_router: bool = True
    """The current router answers the train questions too: its runs join the GRPO runs' provenance."""
    pick: str = "disagree"
    """``disagree``: train on the questions where one pool model was right and another wrong; ``all``."""
    sft_steps: int = 16
    sft_learning_rate: float = 1e-4
    sft_max_length: int = 2048
    response_max_tokens: int = 256
    local_threads: int = 1
    torch_threads: int = 0
    """CPU threads for training (0: torch's default, one per core). 1 where the cores are busy with other
    work: measured beside a running evaluation on 2 cores, two threads waited at every operation's barrier
    and SmolLM2-135M took 210 s to sample 2×48 tokens (8.6 s with one thread)."""
    concurrency: int = 2
    request_timeout_s: float = 900.0
    report: str | None = None
    """Where the report goes (default: ``<output_dir>/learning_loop.md``)."""

    def __post_init__(self) -> None:
        if self.data != "traces" or self.limit is not None or self.alpha != 0.0:
            raise ValueError(
                "data, limit and alpha are not loop keys: name the questions with train, held_out and "
                "report_only, and the GRPO runs' α with alphas"
            )
        for name in ("train", "held_out", "report_only"):
            setattr(self, name, [str(spec) for spec in _listed(getattr(self, name))])
        self.alphas = [float(a) for a in _listed(self.alphas)]
        if not self.train or not self.held_out or not self.alphas:
            raise ValueError("a loop needs train and held_out slices and at least one α in alphas")
        if any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ValueError(f"every α must lie in [0, 1], not {self.alphas}")
        self.serve_alpha = self.alphas[0] if self.serve_alpha is None else float(self.serve_alpha)
        if self.serve_alpha not in self.alphas:
            raise ValueError(f"serve_alpha {self.serve_alpha:g} is not one of alphas {self.alphas}")
        if self.pick not in PICKS:
            raise ValueError(f"pick must be one of {', '.join(PICKS)}, not {self.pick!r}")


def _listed(value: Any) -> list[Any]:
    """A list from YAML, or from a ``key=a,b`` override."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value or [])


class Clock:
    """Wall time per stage, summed over the invocations that ran it (``timings.json`` in the output)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.spent: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.spent[stage] = self.spent.get(stage, 0.0) + time.perf_counter() - began
            self.path.write_text(json.dumps(self.spent, indent=1))


def absolute_url(url: str | None) -> str | None:
    """A relative SQLite path made absolute, so that ``router.yaml`` works from any directory."""
    match = re.match(r"^(sqlite(?:\+\w+)?:///)([^/].*)$", url or "")
    if match is None or match[2].startswith(":memory:"):
        return url
    return match[1] + str(Path(match[2]).resolve())


def finished(factory: Any, stage_dir: Path) -> dict[str, Any] | None:
    """The summary of the training run that already produced this stage's checkpoint, if one did."""
    for checkpoint in (stage_dir / "final" / "router.gguf", stage_dir / "final"):
        run = db.training_run_for_checkpoint(factory, str(checkpoint.resolve()))
        if run is not None and Path(str(run.checkpoint)).exists():
            steps = (run.metrics or {}).get("steps", [])
            return {
                "training_run_id": run.id,
                "status": run.status,
                "checkpoint": run.checkpoint,
                "steps": steps,
            }
    return None


def stage_recipe(cls: type[Any], recipe: LoopRecipe, **changes: Any) -> Any:
    """The loop's values for one trainer's recipe (its own fields only), with ``changes``."""
    values = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(cls) if hasattr(recipe, f.name)}
    return cls(**{**values, **changes})


def train_sft(
    recipe: LoopRecipe, out: Path, rows: list[dict[str, Any]], sources: list[int]
) -> dict[str, Any]:
    stage = stage_recipe(
        sft.SFTRecipe,
        recipe,
        output_dir=str(out),
        replay="only",  # SFT calls no model: no server is started
        max_steps=recipe.sft_steps,
        learning_rate=recipe.sft_learning_rate,
        max_length=recipe.sft_max_length,
        export_gguf=False,
    )
    with TrainingSession.open("sft", stage) as session:
        session.source_run_ids = sources
        session.sft_dataset(rows)
        return session.train(sft.build_trainer(stage, session))


def train_grpo(
    recipe: LoopRecipe, alpha: float, model: str, out: Path, rows: list[dict[str, Any]], sources: list[int]
) -> dict[str, Any]:
    from datasets import Dataset

    stage = stage_recipe(GRPORecipe, recipe, model=model, alpha=alpha, output_dir=str(out))
    with TrainingSession.open("grpo", stage) as session:
        session.source_run_ids = sources
        session.dataset = Dataset.from_list(rows)
        return session.train(grpo.build_trainer(stage, session))


def write_router_yaml(out: Path, serving: Serving, checkpoint: str, alpha: float) -> Path:
    """Settings that serve the trained router: ``routegraph ask --config`` or ``ROUTEGRAPH_CONFIG``."""
    settings: dict[str, Any] = {
        "pool_file": str(serving.pool_file),
        "router_checkpoint": checkpoint,
        "response_max_tokens": serving.response_max_tokens,
        "max_turns": serving.max_turns,
    }
    if serving.database_url:  # the Pool page finds the training run behind the checkpoint in this store
        settings["database_url"] = serving.database_url
    path = out / "router.yaml"
    header = f"# Written by `routegraph train loop`: the router GRPO trained with α={alpha:g}.\n"
    path.write_text(header + yaml.safe_dump(settings, sort_keys=False))
    return path


def main(
    recipe_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    recipe = load_recipe(LoopRecipe, recipe_file, overrides)
    if recipe.torch_threads:
        import torch

        torch.set_num_threads(recipe.torch_threads)
    train = [load_slice(parse_slice(spec)) for spec in recipe.train]
    held = [load_slice(parse_slice(spec)) for spec in recipe.held_out]
    extra = [load_slice(parse_slice(spec)) for spec in recipe.report_only]
    check_disjoint(train, held + extra)
    out = Path(recipe.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(out / "timings.json")
    recipe.database_url = absolute_url(recipe.database_url)
    serving = Serving(
        pool_file=resolve_path(recipe.pool_file).resolve(),
        database_url=recipe.database_url,
        response_max_tokens=recipe.response_max_tokens,
        max_turns=recipe.max_turns,
        local_threads=recipe.local_threads,
        request_timeout_s=recipe.request_timeout_s,
        concurrency=recipe.concurrency,
    )
    pool = load_pool(serving.pool_file)
    factory = db.session_factory(db.make_engine(serving.settings(None).database_url))

    with clock("collect"):
        router = ["router-r1"] if recipe.collect_router else []
        collected = answer(
            serving,
            recipe.router_checkpoint,
            train,
            lambda names: singles(names) + router,
            out / "collect",
            log,
        )
    table = outcome_table(collected, pool.names)
    picked = pick(table, recipe.pick)
    if not picked.kept:
        raise ValueError(
            f"no train question to learn from: of {picked.considered}, every pool model was right on "
            f"{picked.all_right} and wrong on {picked.all_wrong}; add train questions, or pick: all"
        )
    items = {(d.name, i.id): i for d in train for i in d.items}
    kept = {key: items[key] for key in picked.kept}
    log(f"pick: {len(kept)} of {picked.considered} train questions, where the pool disagrees")
    single_runs = [collected[m] for m in singles(pool.names)]
    stored = single_runs + [collected[m] for m in router]

    model, sft_summary = recipe.model, None
    if recipe.sft_steps > 0:
        with clock("sft"):
            rows = warm_start_rows(kept, table, pool)
            sources = source_runs(single_runs, picked.kept)  # the targets are read off these runs
            sft_summary = finished(factory, out / "sft") or train_sft(recipe, out / "sft", rows, sources)
        model = str(sft_summary["checkpoint"])
    trained: dict[float, dict[str, Any]] = {}
    for alpha in recipe.alphas:
        with clock(f"grpo α={alpha:g}"):
            stage, sources = out / f"grpo-alpha{alpha:g}", source_runs(stored, picked.kept)
            rows = grpo_rows(kept, pool)
            trained[alpha] = finished(factory, stage) or train_grpo(
                recipe, alpha, model, stage, rows, sources
            )
    assert recipe.serve_alpha is not None
    served = str(trained[recipe.serve_alpha]["checkpoint"])
    router_yaml = write_router_yaml(out, serving, served, recipe.serve_alpha)

    with clock("evaluate"):
        questions = held + extra
        baselines, routers, notes = evaluate(
            serving,
            questions,
            recipe.model,
            recipe.router_checkpoint if recipe.evaluate_current else False,
            trained,
            out,
            log,
        )

    overrides_text = " ".join(f"{k}={v}" for k, v in (overrides or {}).items())
    results = LoopResults(
        command=f"routegraph train loop --recipe {recipe_file} {overrides_text}".strip(),
        machine=_machine(),
        pool_file=str(recipe.pool_file),
        train=recipe.train,
        held_out=recipe.held_out,
        report_only=recipe.report_only,
        picked=picked,
        picked_by_dataset=dict(Counter(key[0] for key in kept)),
        sft=sft_summary,
        grpo=trained,
        routers=routers,
        baselines=baselines,
        held_out_sets=[d.name for d in held],
        timings=clock.spent,
        this_run_s=time.perf_counter() - clock.started,
        served=f"GRPO α={recipe.serve_alpha:g} → `{served}`",
        router_yaml=str(router_yaml),
        notes=notes,
    )
    report = Path(recipe.report).resolve() if recipe.report else out / "learning_loop.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(results))
    log(f"report: {report}")
    return {"report": str(report), "router_yaml": str(router_yaml), "served": served, "results": results}


def _machine() -> str:
    import torch

    device = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} CPU ({os.cpu_count()} cores), {device}, Python {platform.python_version()}"
