"""`routegraph traces …`: browse, resume, export, label, prune and size the trace store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from app.cli.common import (
    ConfigOpt,
    PoolOpt,
    console,
    err_console,
    fail,
    hop_table,
    open_service,
    report_run,
    settings_for,
)

traces_app = typer.Typer(help="Browse stored runs.", no_args_is_help=True)


@traces_app.command("list")
def traces_list(
    limit: Annotated[int, typer.Option(help="How many runs.")] = 20,
    graph: Annotated[str | None, typer.Option(help="Only this graph.")] = None,
    status: Annotated[str | None, typer.Option(help="ok, failed or running.")] = None,
    config: ConfigOpt = None,
) -> None:
    """The most recent runs."""
    with open_service(settings_for(config), start_servers=False, quiet=True, read_only=True) as service:
        runs = service.list_runs(limit=limit, graph=graph, status=status)
    table = Table(title="runs")
    for column in ("id", "when", "graph", "status", "cost $", "tokens", "question", "answer"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            str(run.id),
            run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(run.graph),
            escape(run.status),
            f"{run.total_cost:.6f}",
            str(run.input_tokens + run.output_tokens),
            escape(run.question[:50]),
            escape((run.answer or "")[:40]),
        )
    console.print(table)


@traces_app.command("show")
def traces_show(run_id: int, config: ConfigOpt = None) -> None:
    """One run with all its hops and texts."""
    with open_service(settings_for(config), start_servers=False, quiet=True, read_only=True) as service:
        run = service.get_run(run_id)
    if run is None:
        raise fail(f"no run with id {run_id}")
    console.print(
        f"[bold]run {run.id}[/bold] · {escape(run.graph)} · {escape(run.status)} · "
        f"router {escape(str(run.router_model))}"
    )
    if run.graph_version or run.router_checkpoint:
        console.print(
            f"[dim]graph {escape(str(run.graph_version))} · router weights "
            f"{escape(str(run.router_checkpoint))}[/dim]"
        )
    console.print(f"question: {escape(run.question)}")
    console.print(f"answer:   {escape(str(run.answer))}")
    if run.error:
        console.print(f"error:    {escape(run.error)}")
    console.print(hop_table(run.hops, title=f"total ${run.total_cost:.6f}"))
    for hop in run.hops:
        text = hop.router_text if hop.router_text is not None else hop.response
        query = f" ← {hop.sub_query}" if hop.sub_query else ""
        header = escape(f"#{hop.index} {hop.node} {hop.model}{query}")
        console.print(f"[dim]{header}[/dim]\n{escape(text or '')}", markup=True)


@traces_app.command("resume")
def traces_resume(
    run_id: Annotated[int, typer.Argument(help="The interrupted run's id.")],
    pool: PoolOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Continue an interrupted run (failed, or left running by a process that died) from its last step.

    The remaining hops are added to the same run, which then finishes as usual. Give the same --pool the
    run used.
    """
    from app.pool.local_servers import LocalServerError
    from app.service import ResumeError

    settings = settings_for(config, pool_file=pool)
    with open_service(settings, start_servers=False, quiet=True) as service:
        try:
            service.check_resumable(run_id)  # before starting any model server
            if as_json:
                service.start_servers()
                result = service.resume(run_id)
            else:
                with err_console.status("Starting model servers…"):
                    service.start_servers()
                with err_console.status(f"Resuming run {run_id}…"):
                    result = service.resume(run_id)
        except ResumeError as exc:
            raise fail(str(exc)) from None
        except LocalServerError as exc:
            raise fail(str(exc)) from None
    report_run(result, as_json)


def _day(value: str | None) -> Any:
    from datetime import datetime

    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise fail(f"--since {value!r} is not a date (YYYY-MM-DD)", 2) from None


def _age(value: str) -> Any:
    """'90d', '12h', '2w' as a timedelta."""
    import re
    from datetime import timedelta

    match = re.fullmatch(r"\s*(\d+)\s*([hdw])\s*", value)
    if not match:
        raise fail(f"--older-than {value!r}: write a number and h, d or w (e.g. 90d)", 2)
    number, unit = int(match[1]), match[2]
    return timedelta(hours=number) if unit == "h" else timedelta(days=number * (7 if unit == "w" else 1))


@traces_app.command("export")
def traces_export(
    out: Annotated[Path, typer.Option("--out", help="File to write (never the trace store itself).")],
    kind: Annotated[str, typer.Option(help="grpo (prompt + answers) or sft (prompt + completion).")] = "grpo",
    since: Annotated[str | None, typer.Option(help="Only runs created on or after YYYY-MM-DD.")] = None,
    graph: Annotated[str | None, typer.Option(help="Only this graph's runs.")] = None,
    labelled_only: Annotated[
        bool, typer.Option("--labelled-only", help="Only runs with gold answers (SFT: answered right).")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet.")] = "jsonl",
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    pool: PoolOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stored runs as rows TRL's GRPOTrainer / SFTTrainer read (load with datasets.load_dataset).

    The file is written whole or not at all (a temporary file renamed into place); an existing one is
    replaced only with --force, and the trace store's own files never.
    """
    from app.service import store_files
    from training import data
    from training.output import ExportError, check_target

    if kind not in ("grpo", "sft"):
        raise fail(f"--kind {kind!r}: choose grpo or sft", 2)
    if fmt not in data.FORMATS:
        raise fail(f"--format {fmt!r}: choose {' or '.join(data.FORMATS)}", 2)
    day = _day(since)
    settings = settings_for(config, pool_file=pool)
    protected = store_files(settings.database_url)
    try:
        check_target(out, force=force, protected=protected)  # before reading a single run
        with open_service(settings, start_servers=False, quiet=True, read_only=True) as service:
            records = service.records(since=day, graph=graph, labelled_only=labelled_only)
            rows = data.rows_from_records(
                records, service.models, "grpo" if kind == "grpo" else "sft", labelled_only=labelled_only
            )
        path = data.write(rows, out, fmt, force=force, protected=protected)
    except ExportError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {len(rows)} {kind} rows to {escape(str(path))}")


SHOWN_REJECTIONS = 20
"""Rejected lines listed one by one; beyond that a count (a binary file would reject every line)."""


@traces_app.command("import-qa")
def traces_import_qa(
    file: Annotated[Path, typer.Argument(help="JSONL of {question, answers: [...]} rows.")],
    graph: Annotated[str, typer.Option(help="Graph of the pending runs new questions become.")] = "router-r1",
    config: ConfigOpt = None,
) -> None:
    """Import a labelled QA file as gold feedback (source "dataset").

    A question some stored run asked gets the gold answers on every such run; a new question becomes a
    pending run (no answer yet) carrying them, a labelled GRPO prompt. Re-importing adds nothing.
    Every line is checked first: the valid ones are imported, each rejected one is listed with its line
    number and reason, and the exit code is 1 when any line was rejected (fix them and import the file
    again: the rows already imported are not added twice).
    """
    from app.evaluation.qa_file import DataError, scan_qa_file
    from app.service import GRAPHS

    if graph not in GRAPHS:
        raise fail(f"--graph {graph!r}: choose one of {', '.join(GRAPHS)}", 2)
    try:
        scan = scan_qa_file(file)
    except DataError as exc:
        raise fail(str(exc)) from None
    for problem in scan.rejected[:SHOWN_REJECTIONS]:
        err_console.print(f"[red]rejected[/red] {escape(str(problem))}")
    if len(scan.rejected) > SHOWN_REJECTIONS:
        err_console.print(f"… and {len(scan.rejected) - SHOWN_REJECTIONS} more rejected lines")
    counts = f"imported {len(scan.rows)}, rejected {len(scan.rejected)}"
    if not scan.rows:
        raise fail(f"{counts}: nothing was written" + ("" if scan.rejected else f" ({file} has no QA rows)"))
    rows = [{"question": r.question, "answers": r.answers} for r in scan.rows]
    with open_service(settings_for(config), start_servers=False, quiet=True) as service:
        result = service.import_qa(rows, graph=graph)
        console.print(
            f"{counts}: {result.attached} attached to stored runs, {result.pending} pending "
            f"questions, {result.unchanged} already imported"
        )
        scored = service.score_labelled()
    if scored:
        console.print(f"{scored} runs scored (Router-R1 rewards stored)")
    if scan.rejected:
        raise fail(f"{len(scan.rejected)} lines of {file} were rejected and not written (listed above)")


@traces_app.command("prune")
def traces_prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Age such as 90d, 12h or 2w.")],
    keep_labelled: Annotated[
        bool, typer.Option("--keep-labelled", help="Keep runs with a gold or correct label.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete runs (with their hops and feedback) older than an age; running runs are kept."""
    age = _age(older_than)
    with open_service(settings_for(config), start_servers=False, quiet=True) as service:
        deleted, cutoff = service.prune(age, keep_labelled=keep_labelled)
    console.print(f"deleted {deleted} runs created before {cutoff:%Y-%m-%d %H:%M} UTC")


@traces_app.command("size")
def traces_size(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Rows per table and the database's size on disk."""
    with open_service(settings_for(config), start_servers=False, quiet=True, read_only=True) as service:
        report = service.size_report()
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"{escape(report['database'])} · {report['bytes'] / 1e6:.2f} MB")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in report["rows"].items():
        table.add_row(name, str(count))
    console.print(table)
