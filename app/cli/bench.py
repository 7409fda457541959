"""`routegraph bench recorded`: the router leaderboard on recorded outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from app.cli.common import ConfigOpt, console, err_console, fail, settings_for

bench_app = typer.Typer(help="Routing benchmarks on recorded outcomes.", no_args_is_help=True)


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
    from app.pool import EndpointError, PoolError
    from app.pool.local_servers import LocalServerError, LocalServers

    try:
        recorded = run.recorded_pool(pool, data)
        train, dev = split(load_queries(data))
        dev = dev[:limit] if limit else dev
        chosen = run.build(run.parse_routers(routers), recorded, router_gguf)
    except (PoolError, OSError, ValueError, KeyError) as exc:
        raise fail(str(exc), 2) from None
    servers = LocalServers(settings_for(config))
    try:
        for router in chosen:
            if isinstance(router, LLMRouter):
                with err_console.status(f"Starting {router.pool.router.name}…"):
                    servers.start_for(router.pool)
        result = run.run_sync(chosen, train, dev, recorded, llm_limit)
    except (PoolError, EndpointError, LocalServerError) as exc:
        raise fail(str(exc)) from None
    finally:
        servers.stop_all()
    written = run.write(result, out, f"Routing on recorded outcomes of {len(recorded.models)} LLMs")
    console.print("wrote " + ", ".join(escape(str(p)) for p in written))
