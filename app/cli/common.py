"""What the command groups share: consoles, option types, settings, errors and opening the service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.config import ConfigError, Settings, load_settings

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file.")]
PoolOpt = Annotated[Path | None, typer.Option("--pool", help="Pool YAML file (default: the embedded pool).")]


def settings_for(config: Path | None, **overrides: Any) -> Settings:
    """Settings from the file, the environment and the options given (None: not given), or exit 2."""
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        err_console.print(f"[red]configuration error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def open_service(settings: Settings, *, start_servers: bool, quiet: bool, read_only: bool = False) -> Any:
    """The service, or exit 1 with its error; ``read_only`` for commands that only read the trace store."""
    from app.pool import PoolError
    from app.pool.local_servers import LocalServerError
    from app.service import QuestionError, RouteGraphService, StoreError

    try:
        if quiet or not start_servers:
            return RouteGraphService.create(settings, start_servers=start_servers, read_only=read_only)
        with err_console.status("Starting model servers…"):
            return RouteGraphService.create(settings, start_servers=start_servers, read_only=read_only)
    except (PoolError, StoreError, LocalServerError, QuestionError) as exc:
        raise fail(str(exc)) from None


def report_run(result: Any, as_json: bool) -> None:
    """A finished run as a hop table and its answer (or one JSON object); exit 1 unless it is ok."""
    if as_json:
        typer.echo(json.dumps(result.to_json_dict()))
    else:
        console.print(hop_table(result.hops, title=f"run {result.run_id} · {result.graph}"))
        console.print(f"[bold]Answer:[/bold] {escape(result.answer or '(none)')}")
        console.print(
            f"total cost ${result.total_cost:.6f} · {result.latency_s:.1f}s · status {result.status}"
        )
        if result.error:
            err_console.print(f"[yellow]note:[/yellow] {escape(result.error)}")
    if result.status != "ok":
        raise typer.Exit(1)


def hop_table(hops: list[Any], title: str) -> Table:
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
