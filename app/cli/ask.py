"""Answering questions: `routegraph ask` (one, from the shell) and `routegraph serve` (many, over HTTP)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import ConfigOpt, PoolOpt, err_console, fail, open_service, report_run, settings_for


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

    settings = settings_for(config, pool_file=pool, router_checkpoint=router)
    with open_service(settings, start_servers=True, quiet=as_json) as service:
        try:
            if as_json:
                result = service.ask(question, graph=graph, budget_usd=budget, max_turns=max_turns)
            else:
                with err_console.status("Routing…"):
                    result = service.ask(question, graph=graph, budget_usd=budget, max_turns=max_turns)
        except QuestionError as exc:
            raise fail(str(exc), 2) from None
    report_run(result, as_json)


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

    settings = settings_for(config, pool_file=pool)
    with open_service(settings, start_servers=True, quiet=False) as service:
        server_app = create_app(
            service,
            api_key=settings.api_key,
            max_body_bytes=settings.server_max_body_bytes,
            max_concurrency=settings.server_max_concurrency,
            max_queue=settings.server_max_queue,
        )
        err_console.print(f"routegraph serving on http://{host}:{port}/v1")
        uvicorn.run(server_app, host=host, port=port, log_level="warning")
