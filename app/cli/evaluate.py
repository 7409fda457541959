"""`routegraph eval`: run graphs and baselines on datasets; `routegraph eval report` writes the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from app.cli.common import ConfigOpt, PoolOpt, console, err_console, fail, open_service, settings_for

eval_app = typer.Typer(
    help="Evaluate the graphs and baselines on a dataset; `eval report DIR` writes report.md.",
    invoke_without_command=True,
)


@eval_app.callback()
def eval_run(
    ctx: typer.Context,
    graph: Annotated[
        str,
        typer.Option(
            help="all, or comma-separated: router-r1, r2-reasoner, single, single:<model>, cheapest, "
            "largest, random, prompt-router, oracle."
        ),
    ] = "all",
    data: Annotated[
        list[str] | None,
        typer.Option(help="JSONL / Parquet file, short name (nq, gsm8k, csqa, …) or hf:<name>; repeatable."),
    ] = None,
    pool: PoolOpt = None,
    limit: Annotated[int | None, typer.Option(help="First N items of each dataset (after --skip).")] = None,
    skip: Annotated[int, typer.Option(min=0, help="Leave out the first N items of each dataset.")] = 0,
    concurrency: Annotated[int, typer.Option(help="Items answered at once.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the random baseline.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Results directory (resumable).")] = Path("eval_results"),
    max_turns: Annotated[int | None, typer.Option(help="Graphs' route calls / subtasks.")] = None,
    report: Annotated[bool, typer.Option(help="Write report.md when done.")] = True,
    normalize: Annotated[
        str,
        typer.Option(
            help="Answer normalisation of EM / F1 / Sub-EM: official (SQuAD v1.1, as in papers) or unicode "
            "(lenient: NFKC, all Unicode punctuation removed; the report says so)."
        ),
    ] = "official",
    config: ConfigOpt = None,
) -> None:
    """Run each method on each item (stored as a run with gold feedback, source "eval"); re-runs resume."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from app.evaluation import baselines, runner
    from app.evaluation import data as eval_data
    from app.evaluation import report as eval_report
    from app.pool import PoolError
    from graphs.answers import NORMALIZATIONS

    if normalize not in NORMALIZATIONS:
        raise fail(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, not {normalize!r}", 2)
    if not data:
        raise fail("--data is required (a file, a short name such as nq, or hf:<name>)", 2)
    try:
        datasets = [eval_data.load_dataset(spec, limit, skip) for spec in data]
    except eval_data.DataError as exc:
        raise fail(str(exc), 2) from None
    settings = settings_for(config, pool_file=pool, max_turns=max_turns)
    with open_service(settings, start_servers=True, quiet=False) as service:
        try:
            methods = baselines.expand_methods(graph, service.pool)
        except (baselines.MethodError, PoolError) as exc:
            raise fail(str(exc), 2) from None
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console) as bar:
            tasks: dict[str, Any] = {}
            current = [""]  # the dataset being run, for the bar labels

            def progress(method: str, done: int, total: int) -> None:
                key = f"{current[0]} · {method}"
                if key not in tasks:
                    tasks[key] = bar.add_task(key, total=total)
                bar.update(tasks[key], completed=done)

            async def run_all() -> None:  # one event loop: the pool's HTTP clients belong to it
                for dataset in datasets:
                    current[0] = dataset.name
                    await runner.run_eval(
                        service,
                        dataset,
                        methods,
                        out,
                        concurrency=concurrency,
                        seed=seed,
                        progress=progress,
                        normalize=normalize,
                    )

            asyncio.run(run_all())
    console.print(f"results in {escape(str(out))}")
    if report:
        written = eval_report.write_report(out)
        console.print(f"report: {escape(str(out / 'report.md'))} · Pareto front: {', '.join(written.pareto)}")


@eval_app.command("report")
def eval_report_command(
    results_dir: Annotated[Path, typer.Argument(help="A results directory of `routegraph eval`.")],
    out: Annotated[Path | None, typer.Option("--out", help="Markdown file (default DIR/report.md).")] = None,
    title: Annotated[str, typer.Option(help="Report heading.")] = "Evaluation report",
    intro: Annotated[
        Path | None,
        typer.Option(help="Markdown file whose text goes under the heading (e.g. how it was run)."),
    ] = None,
) -> None:
    """Tables per dataset and on average (Router-R1 paper format) and the cost-vs-accuracy Pareto plot."""
    from app.evaluation.report import write_report

    if not results_dir.is_dir():
        raise fail(f"{results_dir} is not a directory", 2)
    try:
        written = write_report(results_dir, out, title=title, intro=intro.read_text() if intro else "")
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    target = out or results_dir / "report.md"
    console.print(f"wrote {escape(str(target))} and {', '.join(escape(p.name) for p in written.files)}")
    for note in written.notes:
        err_console.print(f"[yellow]note:[/yellow] {escape(note)}")
