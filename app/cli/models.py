"""`routegraph models` (the pool and where each model runs) and `routegraph prepare` (bundled weights)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from app.cli.common import ConfigOpt, PoolOpt, console, fail, settings_for


def models(pool: PoolOpt = None, config: ConfigOpt = None) -> None:
    """The pool's models, where each local GGUF is, and which local servers are running."""
    import httpx

    from app.pool import PoolError, load_pool
    from app.pool.local_servers import LocalServerError, gguf_path

    settings = settings_for(config, pool_file=pool)
    try:
        loaded = load_pool(settings.pool_file)
    except PoolError as exc:
        raise fail(str(exc)) from None
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


def prepare() -> None:
    """Make sure the bundled GGUF weights are on disk (run by `make app`)."""
    from app.pool.local_servers import prepare_bundled

    for name, path in prepare_bundled().items():
        console.print(f"{name}: {path}")
