"""The `routegraph` command line: parse, then delegate to the service (one module per command group)."""

from __future__ import annotations

import typer

from app.cli import ask, bench, evaluate, models, traces, train

app = typer.Typer(
    help="Route questions across a pool of LLMs (Router-R1, R2-Reasoner).", no_args_is_help=True
)
app.command()(ask.ask)
app.add_typer(traces.traces_app, name="traces")
app.command()(models.models)
app.command()(ask.serve)
app.command()(models.prepare)
app.add_typer(train.train_app, name="train")
app.add_typer(evaluate.eval_app, name="eval")
app.add_typer(bench.bench_app, name="bench")
app.command()(bench.calibrate)


def main() -> None:
    app()
