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
    from app.service import RouteGraphService
    from storage.db import StoreError

    try:
        if quiet or not start_servers:
            return RouteGraphService.create(settings, start_servers=start_servers)
        with err_console.status("Starting model servers…"):
            return RouteGraphService.create(settings, start_servers=start_servers)
    except (PoolError, StoreError, LocalServerError) as exc:
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
    config: ConfigOpt = None,
) -> None:
    """Answer QUESTION through a routing graph and show every hop."""
    from app.service import QuestionError

    settings = _settings(config, pool_file=pool)
    with _service(settings, start_servers=True, quiet=as_json) as service:
        try:
            if as_json:
                result = service.ask(question, graph=graph, budget_usd=budget, max_turns=max_turns)
            else:
                with err_console.status("Routing…"):
                    result = service.ask(question, graph=graph, budget_usd=budget, max_turns=max_turns)
        except QuestionError as exc:
            raise _fail(str(exc), 2) from None
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
