"""The learning loop's question answering, through the service and the evaluation harness: stored runs of
the pool's models and of a router on a set of questions (resumable: the harness skips finished items, and
the replay cache serves every call made before), and the Router-R1 scoring of the stored trajectories.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.config import Settings, load_settings
from app.evaluation import runner
from app.evaluation.data import Dataset
from app.pool import load_pool
from app.pool.local_servers import BUNDLED, gguf_path
from app.service import RouteGraphService
from graphs.router_r1.rewards import RewardConfig, score_trajectory
from training.loop_data import Key
from training.loop_report import trained_label

Methods = Callable[[Sequence[str]], list[str]]
"""The methods to run, given the pool's model names."""
ByMethod = dict[str, dict[Key, dict[str, Any]]]


@dataclass(frozen=True)
class Serving:
    """What every service of one loop runs with: the evaluation settings the router is judged under."""

    pool_file: Path
    database_url: str | None
    response_max_tokens: int
    max_turns: int
    local_threads: int
    request_timeout_s: float | None
    concurrency: int

    def settings(self, router_checkpoint: str | None) -> Settings:
        """Settings with this router (None: the pool's own). Replay ``prefer``: a call made before, by any
        method (a route call passing the question on is byte for byte a single model's call), is served
        from the trace store."""
        return load_settings(
            pool_file=self.pool_file,
            router_checkpoint=router_checkpoint,
            replay="prefer",
            response_max_tokens=self.response_max_tokens,
            max_turns=self.max_turns,
            local_threads=self.local_threads,
            request_timeout_s=self.request_timeout_s,
            **({"database_url": self.database_url} if self.database_url else {}),
        )


def singles(names: Sequence[str]) -> list[str]:
    return [f"single:{name}" for name in names]


def with_baselines(names: Sequence[str]) -> list[str]:
    """The single models, the strongest one and the oracle (from the singles' records: no calls)."""
    return [*singles(names), "largest", "oracle"]


def answer(
    serving: Serving,
    router_checkpoint: str | None,
    datasets: Sequence[Dataset],
    methods: Methods,
    out_dir: Path,
    log: Callable[[str], None] = print,
) -> ByMethod:
    """Run ``methods`` on every dataset with this router, each item stored as a run with its gold answer
    as feedback (``out_dir`` holds the harness's records: a rerun answers only what is missing). Returns
    the records by method; Router-R1 runs' records carry their reward (:func:`score_runs`)."""
    settings = serving.settings(router_checkpoint)
    found: ByMethod = {}

    def progress(method: str, done: int, total: int) -> None:
        if done == total or done % 10 == 0:
            log(f"  {out_dir.name} · {method}: {done}/{total}")

    with RouteGraphService.create(settings) as service:
        names = service.pool.names
        for dataset in datasets:
            results = asyncio.run(
                runner.run_eval(
                    service,
                    dataset,
                    methods(names),
                    out_dir,
                    concurrency=serving.concurrency,
                    progress=progress,
                )
            )
            for method, records in results.items():
                found.setdefault(method, {}).update({(r["dataset"], r["id"]): r for r in records})
        score_runs(service, found.get("router-r1", {}), names)
    return found


def score_runs(service: RouteGraphService, records: dict[Key, dict[str, Any]], names: Sequence[str]) -> None:
    """Add to each router run's record its Router-R1 reward at α=0 (format + outcome: the cost part weighs
    nothing, so routers compare whatever their spend), whether its trajectory broke the format, and the
    models it routed to."""
    for record in records.values():
        run = service.get_run(record["run_id"]) if record.get("run_id") else None
        trajectory = (run.trajectory or "") if run is not None else ""
        parts = score_trajectory(trajectory, record["golds"], record["cost"], names, RewardConfig())
        record["reward"], record["format_error"] = parts.total, parts.format < 0
        record["routed"] = [h.model for h in run.hops if h.node == "route" and h.model] if run else []


def router_weights_of(model: str) -> str:
    """A router to train as a ``router_checkpoint`` setting: its GGUF file for a bundled name or a .gguf,
    else the Hugging Face checkpoint as given (served by vLLM)."""
    return str(gguf_path(model).resolve()) if model in BUNDLED or model.endswith(".gguf") else model


def router_file(pool_file: Path, checkpoint: str | None) -> str:
    """The weights a router runs, comparable across spellings: a ``router_checkpoint`` setting, else the
    pool's own router's (its GGUF file, or its HF model or served id)."""
    if checkpoint is not None:
        return str(Path(checkpoint).resolve()) if checkpoint.endswith(".gguf") else checkpoint
    router = load_pool(pool_file).router
    if router.backend == "llamacpp":
        return str(gguf_path(str(router.gguf)).resolve())
    return str(router.hf_model or router.served_id)


def evaluate(
    serving: Serving,
    questions: Sequence[Dataset],
    model: str,
    current: str | Literal[False] | None,
    trained: dict[float, dict[str, Any]],
    out: Path,
    log: Callable[[str], None] = print,
) -> tuple[ByMethod, dict[str, dict[Key, dict[str, Any]]], list[str]]:
    """Stage f: the baselines' records by method, each router's Router-R1 records by label (``untrained``:
    ``model`` before training; ``current``: the pool's router or ``current``, not evaluated when False; one
    per trained α), and what the report must note.

    Each router answers into a folder named by its weights (a retrained α by its new training run), so a
    rerun never takes one router's stored answers for another's."""
    pool = load_pool(serving.pool_file)
    baselines = answer(serving, None, questions, with_baselines, out / "eval" / "pool", log)
    price = f"${pool.router.price_in:g} in, ${pool.router.price_out:g} out per 1M tokens"
    notes = [
        f"Every router is priced as the pool's router entry ({pool.router.name}: {price}), whatever its "
        "weights.",
        "Routers on llama.cpp decode each step under the step grammar, which keeps every step an action in "
        "the protocol's format (a thought with something in it, a known model, an answer in the question's "
        "format). The training steps' format rate is the policy's own, unconstrained.",
    ]
    untrained = router_weights_of(model)
    weights = {"untrained": router_file(serving.pool_file, untrained)}
    candidates: dict[str, tuple[str | None, str]] = {"untrained": (untrained, _digest(weights["untrained"]))}
    if current is False:
        notes.append("The current router was not evaluated (`evaluate_current: false`).")
    else:
        weights["current"] = router_file(serving.pool_file, current)
        if weights["current"] == weights["untrained"]:
            notes.append("The current router is the untrained router: evaluated once, as `untrained`.")
        else:
            candidates["current"] = (current, _digest(weights["current"]))
    for alpha, run in trained.items():
        candidates[trained_label(alpha)] = (str(run["checkpoint"]), f"training-run-{run['training_run_id']}")
    routers = {}
    for label, (checkpoint, identity) in candidates.items():
        folder = out / "eval" / f"{label.replace('α=', 'alpha-')}-{identity}"
        found = answer(serving, checkpoint, questions, lambda _: ["router-r1"], folder, log)
        routers[label] = found["router-r1"]
    return baselines, routers, notes


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]
