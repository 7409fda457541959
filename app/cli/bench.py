"""`routegraph bench recorded` (router leaderboard on recorded outcomes) and `routegraph calibrate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from app.cli.common import ConfigOpt, console, err_console, fail, settings_for

bench_app = typer.Typer(help="Routing benchmarks on recorded outcomes.", no_args_is_help=True)

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data", help="One outcome JSONL (id, task, question, scores), split 80/20 per task, seeded."
    ),
]
TrainOpt = Annotated[Path | None, typer.Option("--train", help="Outcome JSONL the routers are fitted on.")]
TestOpt = Annotated[Path | None, typer.Option("--test", help="Your held-out outcome JSONL (with --train).")]
PoolOption = Annotated[Path, typer.Option("--pool", help="Pool of backend: recorded models.")]
EncoderOpt = Annotated[str, typer.Option(help="Query embeddings: minilm, smollm2 (llama.cpp) or hashing.")]
DEFAULT_POOL = Path("pools/recorded_9llm.yaml")


def load_split(
    data: Path | None, train: Path | None, test: Path | None, pool: Any
) -> tuple[list, list, Path]:
    """(train, test, file the test queries replay from): ``--data`` split, or ``--train`` + ``--test``."""
    from app.bench.data import DataError, load_queries, require_scores, split

    if data is not None and (train or test):
        raise DataError("give --data FILE (seeded split) or --train FILE --test FILE, not both")
    if data is not None:
        queries = load_queries(data)
        require_scores(queries, pool.models, data)
        fit, held = split(queries)
        return fit, held, data
    if train is None or test is None:
        raise DataError("give --data FILE, or both --train FILE and --test FILE")
    fit, held = load_queries(train), load_queries(test)
    require_scores(fit, pool.models, train)
    require_scores(held, pool.models, test)
    return fit, held, test


@bench_app.command("recorded")
def bench_recorded(
    data: DataOpt = None,
    train: TrainOpt = None,
    test: TestOpt = None,
    routers: Annotated[
        str, typer.Option("--routers", help="'all' or a comma list, e.g. knn,oracle.")
    ] = "all",
    modes: Annotated[
        str, typer.Option(help="Comma list of in-mix, loto, reweighted.")
    ] = "in-mix,loto,reweighted",
    mix: Annotated[str, typer.Option(help="Re-weighted mode's task mix: uniform or task=w,…")] = "uniform",
    router_config: Annotated[
        list[Path] | None, typer.Option("--router-config", help="Calibrated router config (repeatable).")
    ] = None,
    pool: PoolOption = DEFAULT_POOL,
    encoder: EncoderOpt = "minilm",
    limit: Annotated[int | None, typer.Option(help="Only the first N test queries.")] = None,
    llm_limit: Annotated[int, typer.Option(help="Test queries for the LLM routers (slow on CPU).")] = 100,
    router_gguf: Annotated[str | None, typer.Option(help="Trained router .gguf for llm-trained.")] = None,
    evidence_gguf: Annotated[
        str | None, typer.Option(help="Evidence-trained .gguf for llm-evidence.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the table and plots.")] = Path(
        "benchmarks/results"
    ),
    config: ConfigOpt = None,
) -> None:
    """Router leaderboard on recorded outcomes: in-mix, leave-one-task-out and re-weighted, with intervals."""
    from app.bench import run
    from app.bench.calibrate import load_router_config
    from app.bench.embeddings import Embeddings
    from app.bench.routers import LLMRouter
    from app.pool import EndpointError, PoolError, load_pool
    from app.pool.local_servers import LocalServerError, LocalServers

    settings = settings_for(config)
    try:
        fit, held, replay_file = load_split(data, train, test, load_pool(pool))
        recorded = run.recorded_pool(pool, replay_file)
        held = held[:limit] if limit else held
        chosen_modes = run.parse_modes(modes)
        names = run.parse_routers(routers)
        extras = run.Extras(
            embeddings=Embeddings(encoder, settings.cache_dir, settings),
            router_gguf=router_gguf,
            evidence_gguf=evidence_gguf,
            configs=[load_router_config(p) for p in router_config or []],
        )
        chosen = run.build(names, recorded, extras)
        classical = [n for n in names if n not in run.LLM_ROUTERS]
        loto_file = data or train
        assert loto_file is not None
        loto_pool = run.recorded_pool(pool, loto_file)
        loto_queries = fit + held if data else fit
        mix_weights = run.shift.parse_mix(mix)
    except (PoolError, OSError, ValueError, KeyError) as exc:
        raise fail(str(exc), 2) from None
    servers = LocalServers(settings)
    try:
        for router in chosen:
            if isinstance(router, LLMRouter):
                with err_console.status(f"Starting {router.pool.router.name}…"):
                    servers.start_for(router.pool)
        result = run.run_sync(
            chosen,
            fit,
            held,
            recorded,
            llm_limit,
            modes=chosen_modes,
            loto=(lambda: run.build(classical, loto_pool, extras), loto_queries, loto_pool),
            mix=mix_weights,
            on_fold=lambda task: err_console.print(f"leave-one-task-out: holding out {escape(task)}"),
        )
    except (PoolError, EndpointError, LocalServerError, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        servers.stop_all()
        extras.embeddings.close() if extras.embeddings else None
    written = run.write(result, out, f"Routing on recorded outcomes of {len(recorded.models)} LLMs")
    console.print("wrote " + ", ".join(escape(str(p)) for p in written))


def calibrate(
    router: Annotated[
        str, typer.Option("--router", help="A classical router with a knob, e.g. blend, knn-emb.")
    ],
    target_price: Annotated[
        float | None, typer.Option(help="Average price to reach, USD per 1M tokens (in/out averaged).")
    ] = None,
    target_share_strong: Annotated[
        float | None, typer.Option(help="Share of calls to the most expensive price tier, 0–1.")
    ] = None,
    data: DataOpt = None,
    train: TrainOpt = None,
    pool: PoolOption = DEFAULT_POOL,
    encoder: EncoderOpt = "minilm",
    folds: Annotated[int, typer.Option(help="Cross-validation folds on train.")] = 5,
    out: Annotated[Path, typer.Option("--out", help="Router config YAML to write.")] = Path("router.yaml"),
    config: ConfigOpt = None,
) -> None:
    """Pick a router's cost knob on train (cross-validated) for a target price or strong share; write it."""
    from app.bench import run
    from app.bench.calibrate import calibrate as fit_knob
    from app.bench.calibrate import file_sha256
    from app.bench.data import DataError, load_queries, require_scores, split
    from app.bench.embeddings import Embeddings
    from app.pool import PoolError

    settings = settings_for(config)
    source = train or data
    try:
        if source is None or (train and data):
            raise DataError("give --train FILE (all of it is used) or --data FILE (its seeded train split)")
        recorded = run.recorded_pool(pool, source)
        queries = load_queries(source)
        require_scores(queries, recorded.models, source)
        fit = split(queries)[0] if data else queries
        embeddings = Embeddings(encoder, settings.cache_dir, settings)
        found = fit_knob(
            router,
            fit,
            recorded.models,
            target_price=target_price,
            target_share_strong=target_share_strong,
            embeddings=embeddings,
            folds=folds,
        )
        embeddings.close()
    except (PoolError, OSError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    from dataclasses import replace

    found = replace(
        found, fitted_on=str(source), fitted_on_sha256=file_sha256(source), fitted_on_queries=len(fit)
    )
    found.save(out)
    unit = "$/1M" if found.metric == "price" else "share strong"
    console.print(
        f"{escape(router)}: λ = {found.knob:.4g} reaches {found.cv_achieved:.3f} {unit} out-of-fold "
        f"(target {found.target:g}); wrote {escape(str(out))}"
    )
