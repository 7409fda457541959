"""The `routegraph` command line: parse, then delegate to the service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.config import ConfigError, Settings, load_settings

app = typer.Typer(
    help="Route questions across a pool of LLMs (Router-R1, R2-Reasoner).", no_args_is_help=True
)
traces_app = typer.Typer(help="Browse stored runs.", no_args_is_help=True)
app.add_typer(traces_app, name="traces")

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file.")]
PoolOpt = Annotated[Path | None, typer.Option("--pool", help="Pool YAML file (default: the embedded pool).")]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        err_console.print(f"[red]configuration error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _service(settings: Settings, *, start_servers: bool, quiet: bool) -> Any:
    from app.local_models import LocalServerError
    from app.pool import PoolError
    from app.service import QuestionError, RouteGraphService
    from storage.db import StoreError

    try:
        if quiet or not start_servers:
            return RouteGraphService.create(settings, start_servers=start_servers)
        with err_console.status("Starting model servers…"):
            return RouteGraphService.create(settings, start_servers=start_servers)
    except (PoolError, StoreError, LocalServerError, QuestionError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    pool: PoolOpt = None,
    graph: Annotated[str, typer.Option(help="router-r1 or r2-reasoner")] = "router-r1",
    budget: Annotated[float | None, typer.Option(help="Spend limit in USD for this question.")] = None,
    max_turns: Annotated[
        int | None, typer.Option(help="Route calls before a forced answer (r2-reasoner: most subtasks).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    router: Annotated[
        str | None, typer.Option(help="A trained router: .gguf (llama.cpp) or a HF checkpoint (vLLM).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Answer QUESTION through a routing graph and show every hop."""
    from app.service import QuestionError

    settings = _settings(config, pool_file=pool, router_checkpoint=router)
    with _service(settings, start_servers=True, quiet=as_json) as service:
        try:
            if as_json:
                result = service.ask(question, graph=graph, budget_usd=budget, max_turns=max_turns)
            else:
                with err_console.status("Routing…"):
                    result = service.ask(question, graph=graph, budget_usd=budget, max_turns=max_turns)
        except QuestionError as exc:
            raise _fail(str(exc), 2) from None
    _report_run(result, as_json)


def _report_run(result: Any, as_json: bool) -> None:
    """A finished run as a hop table and its answer (or one JSON object); exit 1 unless it is ok."""
    if as_json:
        typer.echo(json.dumps(result.to_json_dict()))
    else:
        console.print(_hop_table(result.hops, title=f"run {result.run_id} · {result.graph}"))
        console.print(f"[bold]Answer:[/bold] {escape(result.answer or '(none)')}")
        console.print(
            f"total cost ${result.total_cost:.6f} · {result.latency_s:.1f}s · status {result.status}"
        )
        if result.error:
            err_console.print(f"[yellow]note:[/yellow] {escape(result.error)}")
    if result.status != "ok":
        raise typer.Exit(1)


def _hop_table(hops: list[Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("#", "node", "model", "tokens in", "tokens out", "cost $", "latency s", "error"):
        table.add_column(
            column, justify="right" if column.startswith(("tok", "cost", "lat", "#")) else "left"
        )
    for i, hop in enumerate(hops):
        table.add_row(
            str(i),
            escape(hop.node),
            escape(hop.model or ""),
            str(hop.input_tokens),
            str(hop.output_tokens),
            f"{hop.cost:.6f}",
            f"{hop.latency_s:.2f}",
            escape((hop.error or "")[:60]),
        )
    return table


@traces_app.command("list")
def traces_list(
    limit: Annotated[int, typer.Option(help="How many runs.")] = 20,
    graph: Annotated[str | None, typer.Option(help="Only this graph.")] = None,
    status: Annotated[str | None, typer.Option(help="ok, failed or running.")] = None,
    config: ConfigOpt = None,
) -> None:
    """The most recent runs."""
    with _service(_settings(config), start_servers=False, quiet=True) as service:
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
    with _service(_settings(config), start_servers=False, quiet=True) as service:
        run = service.get_run(run_id)
    if run is None:
        raise _fail(f"no run with id {run_id}")
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
    console.print(_hop_table(run.hops, title=f"total ${run.total_cost:.6f}"))
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
    from app.local_models import LocalServerError
    from app.service import ResumeError

    settings = _settings(config, pool_file=pool)
    with _service(settings, start_servers=False, quiet=True) as service:
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
            raise _fail(str(exc)) from None
        except LocalServerError as exc:
            raise _fail(str(exc)) from None
    _report_run(result, as_json)


def _store(settings: Settings) -> Any:
    """The trace store's session factory (migrated on open), or a clear error naming the database."""
    from storage import db

    try:
        return db.session_factory(db.make_engine(settings.database_url))
    except db.StoreError as exc:
        raise _fail(str(exc)) from None


def _day(value: str | None) -> Any:
    from datetime import datetime

    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise _fail(f"--since {value!r} is not a date (YYYY-MM-DD)", 2) from None


def _age(value: str) -> Any:
    """'90d', '12h', '2w' as a timedelta."""
    import re
    from datetime import timedelta

    match = re.fullmatch(r"\s*(\d+)\s*([hdw])\s*", value)
    if not match:
        raise _fail(f"--older-than {value!r}: write a number and h, d or w (e.g. 90d)", 2)
    number, unit = int(match[1]), match[2]
    return timedelta(hours=number) if unit == "h" else timedelta(days=number * (7 if unit == "w" else 1))


@traces_app.command("export")
def traces_export(
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    kind: Annotated[str, typer.Option(help="grpo (prompt + answers) or sft (prompt + completion).")] = "grpo",
    since: Annotated[str | None, typer.Option(help="Only runs created on or after YYYY-MM-DD.")] = None,
    graph: Annotated[str | None, typer.Option(help="Only this graph's runs.")] = None,
    labelled_only: Annotated[
        bool, typer.Option("--labelled-only", help="Only runs with gold answers (SFT: answered right).")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet.")] = "jsonl",
    pool: PoolOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stored runs as rows TRL's GRPOTrainer / SFTTrainer read (load with datasets.load_dataset)."""
    from app import export
    from app.pool import PoolError, load_pool

    if kind not in ("grpo", "sft"):
        raise _fail(f"--kind {kind!r}: choose grpo or sft", 2)
    if fmt not in export.FORMATS:
        raise _fail(f"--format {fmt!r}: choose {' or '.join(export.FORMATS)}", 2)
    settings = _settings(config, pool_file=pool)
    try:
        loaded = load_pool(settings.pool_file)
    except PoolError as exc:
        raise _fail(str(exc)) from None
    factory = _store(settings)
    rows = export.rows(
        factory,
        loaded,
        "grpo" if kind == "grpo" else "sft",
        since=_day(since),
        graph=graph,
        labelled_only=labelled_only,
    )
    path = export.write(rows, out, fmt)
    console.print(f"wrote {len(rows)} {kind} rows to {escape(str(path))}")


@traces_app.command("import-qa")
def traces_import_qa(
    file: Annotated[Path, typer.Argument(help="JSONL of {question, answers: [...]} rows.")],
    graph: Annotated[str, typer.Option(help="Graph of the pending runs new questions become.")] = "router-r1",
    config: ConfigOpt = None,
) -> None:
    """Import a labelled QA file as gold feedback (source "dataset").

    A question some stored run asked gets the gold answers on every such run; a new question becomes a
    pending run (no answer yet) carrying them, a labelled GRPO prompt. Re-importing adds nothing.
    """
    import json

    from storage import datasets

    if not file.is_file():
        raise _fail(f"{file} does not exist")
    rows = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            rows.append({"question": str(item["question"]), "answers": [str(a) for a in item["answers"]]})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise _fail(
                f"{file}:{number}: expected a JSON object with question and answers ({exc})"
            ) from None
    try:
        result = datasets.import_qa(_store(_settings(config)), rows, graph=graph)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{len(rows)} QA rows: {result.attached} attached to stored runs, {result.pending} pending "
        f"questions, {result.unchanged} already imported"
    )
    with _service(_settings(config), start_servers=False, quiet=True) as service:
        scored = service.score_labelled()
    if scored:
        console.print(f"{scored} runs scored (Router-R1 rewards stored)")


@traces_app.command("prune")
def traces_prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Age such as 90d, 12h or 2w.")],
    keep_labelled: Annotated[
        bool, typer.Option("--keep-labelled", help="Keep runs with a gold or correct label.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete runs (with their hops and feedback) older than an age; running runs are kept."""
    from storage import models
    from storage.maintenance import prune

    cutoff = models.utcnow() - _age(older_than)
    deleted = prune(_store(_settings(config)), cutoff, keep_labelled=keep_labelled)
    console.print(f"deleted {deleted} runs created before {cutoff:%Y-%m-%d %H:%M} UTC")


@traces_app.command("size")
def traces_size(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Rows per table and the database's size on disk."""
    from storage.maintenance import size_report

    factory = _store(_settings(config))
    report = size_report(factory.kw["bind"])
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"{escape(report['database'])} · {report['bytes'] / 1e6:.2f} MB")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in report["rows"].items():
        table.add_row(name, str(count))
    console.print(table)


@app.command()
def models(pool: PoolOpt = None, config: ConfigOpt = None) -> None:
    """The pool's models, where each local GGUF is, and which local servers are running."""
    import httpx

    from app.local_models import LocalServerError, gguf_path
    from app.pool import PoolError, load_pool

    settings = _settings(config, pool_file=pool)
    try:
        loaded = load_pool(settings.pool_file)
    except PoolError as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"pool {settings.pool_file}")
    for column in ("role", "name", "backend", "$/1M in", "$/1M out", "weights / endpoint", "status"):
        table.add_column(column)
    for role, entry in [("router", loaded.router)] + [("model", m) for m in loaded.models]:
        if entry.backend == "llamacpp":
            try:
                where, status = str(gguf_path(str(entry.gguf))), "weights ready"
            except LocalServerError as exc:
                where, status = str(entry.gguf), f"missing: {exc}"
        elif entry.backend == "vllm":
            where, status = str(entry.hf_model), "started on demand (gpu extra)"
        else:
            where = str(entry.base_url)
            try:
                status = "up" if httpx.get(f"{where}/models", timeout=3).status_code < 500 else "down"
            except httpx.HTTPError:
                status = "unreachable"
        table.add_row(
            role,
            entry.name,
            entry.backend,
            f"{entry.price_in:.2f}",
            f"{entry.price_out:.2f}",
            escape(where),
            escape(status),
        )
    console.print(table)
    console.print(
        "Embedded llama.cpp servers run only while a routegraph command that needs them is running "
        "(routegraph ask, the app); each binds a free port on 127.0.0.1."
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    pool: PoolOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the graphs and the pool's models as an OpenAI-compatible API (/v1/chat/completions).

    The bearer token is ROUTEGRAPH_API_KEY (unset: no token needed); limits are ROUTEGRAPH_SERVER_*.
    """
    import uvicorn

    from app.server import create_app

    settings = _settings(config, pool_file=pool)
    with _service(settings, start_servers=True, quiet=False) as service:
        server_app = create_app(
            service,
            api_key=settings.api_key,
            max_body_bytes=settings.server_max_body_bytes,
            max_concurrency=settings.server_max_concurrency,
            max_queue=settings.server_max_queue,
        )
        err_console.print(f"routegraph serving on http://{host}:{port}/v1")
        uvicorn.run(server_app, host=host, port=port, log_level="warning")


@app.command()
def prepare() -> None:
    """Make sure the bundled GGUF weights are on disk (run by `make app`)."""
    from app.local_models import prepare_bundled

    for name, path in prepare_bundled().items():
        console.print(f"{name}: {path}")


train_app = typer.Typer(help="Train the router from stored traces or QA files (TRL).", no_args_is_help=True)
app.add_typer(train_app, name="train")
RecipeOpt = Annotated[Path, typer.Option("--recipe", help="Recipe YAML (training/recipes/*.yaml).")]
OverridesArg = Annotated[list[str] | None, typer.Argument(help="key=value recipe overrides.")]


def _overrides(pairs: list[str] | None) -> dict[str, str]:
    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"override {pair!r} is not key=value", 2)
        parsed[key.strip()] = value.strip()
    return parsed


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

    try:
        _report_training(grpo.main(str(recipe), _overrides(overrides)))
    except ValueError as exc:
        raise _fail(str(exc), 2) from None


@train_app.command("allocate")
def train_allocate(recipe: RecipeOpt, overrides: OverridesArg = None) -> None:
    """Learning to allocate on recorded outcomes: SFT warm start, then GRPO on recorded score − λ·cost."""
    from training import allocate

    try:
        for summary in allocate.main(str(recipe), _overrides(overrides)):
            _report_training(summary)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None


@train_app.command("alternate")
def train_alternate(
    sft_recipe: Annotated[Path, typer.Option("--sft-recipe", help="SFT recipe YAML.")],
    grpo_recipe: Annotated[Path, typer.Option("--grpo-recipe", help="GRPO recipe YAML.")],
    rounds: Annotated[int, typer.Option(help="SFT → GRPO rounds.")] = 2,
    output_dir: Annotated[str, typer.Option(help="Where each round's checkpoints go.")] = "runs/alternate",
) -> None:
    """R2-Reasoner's schedule: SFT and GRPO rounds in turn, each from the previous round's checkpoint."""
    from training import sft

    try:
        for summary in sft.alternate(sft_recipe, grpo_recipe, rounds, output_dir):
            _report_training(summary)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None


@train_app.command("sft")
def train_sft(recipe: RecipeOpt, overrides: OverridesArg = None) -> None:
    """SFT on successful traces (or synthetic well-formed trajectories as a format warm start)."""
    from training import sft

    try:
        _report_training(sft.main(str(recipe), _overrides(overrides)))
    except ValueError as exc:
        raise _fail(str(exc), 2) from None


eval_app = typer.Typer(
    help="Evaluate the graphs and baselines on a dataset; `eval report DIR` writes report.md.",
    invoke_without_command=True,
)
app.add_typer(eval_app, name="eval")


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
    limit: Annotated[int | None, typer.Option(help="First N items of each dataset.")] = None,
    concurrency: Annotated[int, typer.Option(help="Items answered at once.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the random baseline.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Results directory (resumable).")] = Path("eval_results"),
    max_turns: Annotated[int | None, typer.Option(help="Graphs' route calls / subtasks.")] = None,
    report: Annotated[bool, typer.Option(help="Write report.md when done.")] = True,
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

    if not data:
        raise _fail("--data is required (a file, a short name such as nq, or hf:<name>)", 2)
    try:
        datasets = [eval_data.load_dataset(spec, limit) for spec in data]
    except eval_data.DataError as exc:
        raise _fail(str(exc), 2) from None
    settings = _settings(config, pool_file=pool, max_turns=max_turns)
    with _service(settings, start_servers=True, quiet=False) as service:
        try:
            methods = baselines.expand_methods(graph, service.pool)
        except (baselines.MethodError, PoolError) as exc:
            raise _fail(str(exc), 2) from None
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
                        service, dataset, methods, out, concurrency=concurrency, seed=seed, progress=progress
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
        raise _fail(f"{results_dir} is not a directory", 2)
    try:
        written = write_report(results_dir, out, title=title, intro=intro.read_text() if intro else "")
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    target = out or results_dir / "report.md"
    console.print(f"wrote {escape(str(target))} and {', '.join(escape(p.name) for p in written.files)}")
    for note in written.notes:
        err_console.print(f"[yellow]note:[/yellow] {escape(note)}")


bench_app = typer.Typer(help="Routing benchmarks on recorded outcomes.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("recorded")
def bench_recorded(
    data: Annotated[
        Path, typer.Option("--data", help="Recorded-outcome JSONL (id, task, question, scores).")
    ],
    routers: Annotated[
        str, typer.Option("--routers", help="'all' or a comma list, e.g. knn,oracle.")
    ] = "all",
    pool: Annotated[Path, typer.Option("--pool", help="Pool of backend: recorded models.")] = Path(
        "pools/recorded_9llm.yaml"
    ),
    limit: Annotated[int | None, typer.Option(help="Only the first N dev queries.")] = None,
    llm_limit: Annotated[int, typer.Option(help="Dev queries for the LLM routers (slow on CPU).")] = 100,
    router_gguf: Annotated[str | None, typer.Option(help="Trained router .gguf for llm-trained.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the table and plot.")] = Path(
        "benchmarks/results"
    ),
    config: ConfigOpt = None,
) -> None:
    """Leaderboard of routers on the dev split of recorded outcomes: tables, RouteLLM summary, plot."""
    from app.bench import run
    from app.bench.data import load_queries, split
    from app.bench.routers import LLMRouter
    from app.local_models import LocalServerError, LocalServers
    from app.pool import EndpointError, PoolError

    try:
        recorded = run.recorded_pool(pool, data)
        train, dev = split(load_queries(data))
        dev = dev[:limit] if limit else dev
        chosen = run.build(run.parse_routers(routers), recorded, router_gguf)
    except (PoolError, OSError, ValueError, KeyError) as exc:
        raise _fail(str(exc), 2) from None
    servers = LocalServers(_settings(config))
    try:
        for router in chosen:
            if isinstance(router, LLMRouter):
                with err_console.status(f"Starting {router.pool.router.name}…"):
                    servers.start_for(router.pool)
        result = run.run_sync(chosen, train, dev, recorded, llm_limit)
    except (PoolError, EndpointError, LocalServerError) as exc:
        raise _fail(str(exc)) from None
    finally:
        servers.stop_all()
    written = run.write(result, out, f"Routing on recorded outcomes of {len(recorded.models)} LLMs")
    console.print("wrote " + ", ".join(escape(str(p)) for p in written))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
