"""`routegraph train …`: train the router with TRL (GRPO, SFT, their alternation, allocation, the loop)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.common import console, fail

train_app = typer.Typer(help="Train the router from stored traces or QA files (TRL).", no_args_is_help=True)
RecipeOpt = Annotated[Path, typer.Option("--recipe", help="Recipe YAML (training/recipes/*.yaml).")]
OverridesArg = Annotated[list[str] | None, typer.Argument(help="key=value recipe overrides.")]


def _overrides(pairs: list[str] | None) -> dict[str, str]:
    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"override {pair!r} is not key=value", 2)
        parsed[key.strip()] = value.strip()
    return parsed


@contextmanager
def _reported() -> Iterator[None]:
    """A bad recipe, data file, trace store (its database_url) or missing weights as one line and exit 2,
    not a traceback."""
    from app.pool.local_servers import LocalServerError
    from app.service import StoreError

    try:
        yield
    except (ValueError, StoreError, LocalServerError) as exc:
        raise fail(str(exc), 2) from None


def _report_training(summary: dict[str, Any]) -> None:
    steps = summary["steps"]
    table = Table(title=f"training run {summary['training_run_id']} · {summary['status']}")
    for column in ("step", "loss", "reward", "format rate", "accuracy", "cost $"):
        table.add_column(column, justify="right")
    for step in steps:
        table.add_row(
            *[_cell(step.get(k)) for k in ("step", "loss", "reward", "format_rate", "accuracy", "cost")]
        )
    console.print(table)
    console.print(f"checkpoint: {summary['checkpoint']}")


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


@train_app.command("grpo")
def train_grpo(recipe: RecipeOpt, overrides: OverridesArg = None) -> None:
    """GRPO on multi-turn Router-R1 rollouts (pool answers replayed from the trace store)."""
    from training import grpo

    with _reported():
        _report_training(grpo.main(str(recipe), _overrides(overrides)))


@train_app.command("allocate")
def train_allocate(recipe: RecipeOpt, overrides: OverridesArg = None) -> None:
    """Learning to allocate on recorded outcomes: SFT warm start, then GRPO on recorded score − λ·cost."""
    from training import allocate

    with _reported():
        for summary in allocate.main(str(recipe), _overrides(overrides)):
            _report_training(summary)


@train_app.command("alternate")
def train_alternate(
    sft_recipe: Annotated[Path, typer.Option("--sft-recipe", help="SFT recipe YAML.")],
    grpo_recipe: Annotated[Path, typer.Option("--grpo-recipe", help="GRPO recipe YAML.")],
    rounds: Annotated[int, typer.Option(help="SFT → GRPO rounds.")] = 2,
    output_dir: Annotated[str, typer.Option(help="Where each round's checkpoints go.")] = "runs/alternate",
) -> None:
    """R2-Reasoner's schedule: SFT and GRPO rounds in turn, each from the previous round's checkpoint."""
    from training import sft

    with _reported():
        for summary in sft.alternate(sft_recipe, grpo_recipe, rounds, output_dir):
            _report_training(summary)


@train_app.command("sft")
def train_sft(recipe: RecipeOpt, overrides: OverridesArg = None) -> None:
    """SFT on successful traces (or synthetic well-formed trajectories as a format warm start)."""
    from training import sft

    with _reported():
        _report_training(sft.main(str(recipe), _overrides(overrides)))


@train_app.command("loop")
def train_loop(recipe: RecipeOpt, overrides: OverridesArg = None) -> None:
    """The learning loop: stored runs → questions where the pool disagrees → SFT warm start → GRPO per α →
    GGUF → held-out evaluation → report (training/loop.py)."""
    from training import loop

    with _reported():
        summary = loop.main(str(recipe), _overrides(overrides), log=typer.echo)
    for run in [summary["results"].sft, *summary["results"].grpo.values()]:
        if run is not None:
            _report_training(run)
    config = summary["router_yaml"]
    typer.echo(f"report: {summary['report']}")
    typer.echo(f"serve it: routegraph ask --config {config} QUESTION   (the app: ROUTEGRAPH_CONFIG={config})")
    typer.echo(f"or: ROUTEGRAPH_ROUTER_CHECKPOINT={summary['served']} with the settings in {config}")
