"""Run methods over a dataset through the service: resumable, concurrent, one results JSONL per method."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.evaluation import baselines
from app.evaluation.data import Dataset, EvalItem
from app.evaluation.scoring import score
from app.service import RouteGraphService, RunResult
from graphs.answers import Normalization

EVAL_SOURCE = "eval"
"""Feedback source of the gold answers the harness attaches to every run it makes."""
Progress = Callable[[str, int, int], None]
"""(method, items done now, items of the method) after each finished item, and once at the start."""


def results_file(out_dir: Path, method: str) -> Path:
    """``single:Gemma-3-270M`` → ``single-Gemma-3-270M.jsonl``."""
    return out_dir / (re.sub(r"[^A-Za-z0-9._-]+", "-", method) + ".jsonl")


def read_records(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The last record per (dataset, item id) of one results file."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[(record["dataset"], record["id"])] = record
    return records


def _record(
    dataset: str, item: EvalItem, method: str, result: RunResult, normalize: Normalization, router: str
) -> dict[str, Any]:
    calls = [h for h in result.hops if h.model]
    router_cost = sum(h.cost for h in result.hops if h.model == router)
    return {
        "dataset": dataset,
        "id": item.id,
        "task": item.task,
        "method": method,
        "run_id": result.run_id,
        "status": result.status,
        "error": result.error,
        "answer": result.answer,
        "golds": item.answers,
        **score(item, result.answer, normalize),
        "cost": result.total_cost,
        "router_cost": router_cost,
        "pool_cost": result.total_cost - router_cost,
        "ended_by": _ended_by(result),
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "latency_s": result.latency_s,
        "hops": len(result.hops),
        "calls": len(calls),
        "models": sorted({h.model for h in calls if h.model}),
    }


def _ended_by(result: RunResult) -> str | None:
    """Why a graph run stopped routing when it did not simply answer: 'max turns', a repeated call, ...
    (the final hop's ``answer_only`` or ``forced`` note); None for a plain answer or a baseline."""
    for hop in reversed(result.hops):
        reason = hop.detail.get("forced") or hop.detail.get("answer_only")
        if reason:
            return str(reason)
        if hop.node in ("think", "answer"):
            return None
    return None


async def _run_item(
    service: RouteGraphService, dataset: Dataset, item: EvalItem, method: str, seed: int
) -> RunResult:
    if method in baselines.GRAPH_METHODS:
        return await service.aask(item.prompt, graph=method)
    if method == "prompt-router":
        return await baselines.prompt_router(service, item)
    model = baselines.picked_model(method, service.pool, item, seed, dataset.name)
    return await baselines.direct(service, item, model, method)


def _scored_as(record: dict[str, Any], item: EvalItem, normalize: Normalization) -> dict[str, Any] | None:
    """The record re-scored from its stored answer when it was scored with another normalisation, else None.

    Records written before the option existed carry no ``normalize`` key: they were scored the official way.
    """
    if record.get("normalize", "official") == normalize:
        return None
    return {**record, **score(item, record.get("answer") or "", normalize)}


async def run_method(
    service: RouteGraphService,
    dataset: Dataset,
    method: str,
    out_dir: Path,
    *,
    concurrency: int = 1,
    seed: int = 0,
    progress: Progress | None = None,
    normalize: Normalization = "official",
) -> list[dict[str, Any]]:
    """Answer every item not yet finished (failed ones are retried); returns all of this dataset's records.

    Finished items scored with another ``normalize`` are re-scored from their stored answers, not asked again.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = results_file(out_dir, method)
    if method == "oracle":
        return _write_oracle(service, dataset, out_dir, path, progress)
    done = {k: r for k, r in read_records(path).items() if k[0] == dataset.name and r["status"] == "ok"}
    items = {i.id: i for i in dataset.items}
    rescored = [
        again
        for (_, item_id), record in done.items()
        if item_id in items and (again := _scored_as(record, items[item_id], normalize)) is not None
    ]
    if rescored:
        done.update({(dataset.name, r["id"]): r for r in rescored})
        with path.open("a") as out:
            out.writelines(json.dumps(r) + "\n" for r in rescored)
    todo = [i for i in dataset.items if (dataset.name, i.id) not in done]
    finished = len(dataset.items) - len(todo)
    if progress:
        progress(method, finished, len(dataset.items))
    reusable = _reusable_singles(out_dir, dataset.name)
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def one(item: EvalItem) -> None:
        nonlocal finished
        async with semaphore:
            record = _reuse(method, service, item, seed, dataset.name, reusable)
            if record is not None:
                record = _scored_as(record, item, normalize) or record
            else:
                result = await _run_item(service, dataset, item, method, seed)
                if item.answers:
                    service.add_feedback(result.run_id, "gold", item.answers[0], source=EVAL_SOURCE)
                record = _record(dataset.name, item, method, result, normalize, service.pool.router.name)
            done[(dataset.name, item.id)] = record
            with path.open("a") as out:
                out.write(json.dumps(record) + "\n")
            finished += 1
            if progress:
                progress(method, finished, len(dataset.items))

    await asyncio.gather(*(one(item) for item in todo))
    return [done[(dataset.name, i.id)] for i in dataset.items if (dataset.name, i.id) in done]


def _reusable_singles(out_dir: Path, dataset: str) -> dict[str, dict[str, dict[str, Any]]]:
    """model → item id → ok ``single:<model>`` record, for the picking baselines."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for path in out_dir.glob("single-*.jsonl"):
        for (name, item_id), record in read_records(path).items():
            if name == dataset and record["status"] == "ok":
                found.setdefault(record["method"].removeprefix("single:"), {})[item_id] = record
    return found


def _reuse(
    method: str,
    service: RouteGraphService,
    item: EvalItem,
    seed: int,
    dataset: str,
    reusable: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, Any] | None:
    if method not in baselines.PICKING:
        return None
    model = baselines.picked_model(method, service.pool, item, seed, dataset)
    record = reusable.get(model, {}).get(item.id)
    return {**record, "method": method, "picked": model, "reused": True} if record else None


def _write_oracle(
    service: RouteGraphService, dataset: Dataset, out_dir: Path, path: Path, progress: Progress | None
) -> list[dict[str, Any]]:
    singles = {
        f"single:{name}": read_records(results_file(out_dir, f"single:{name}")) for name in service.pool.names
    }
    kept = {k: r for k, r in read_records(path).items() if k[0] != dataset.name}
    records = []
    for item in dataset.items:
        per_model = {
            m: recs[(dataset.name, item.id)] for m, recs in singles.items() if (dataset.name, item.id) in recs
        }
        if len(per_model) < len(singles):
            continue  # the oracle needs every single model's answer to this item
        record = baselines.oracle_record(per_model, service.pool)
        if record is not None:
            records.append(record)
            kept[(dataset.name, item.id)] = record
    path.write_text("".join(json.dumps(r) + "\n" for r in kept.values()))
    if progress:
        progress("oracle", len(records), len(dataset.items))
    return records


async def run_eval(
    service: RouteGraphService,
    dataset: Dataset,
    methods: list[str],
    out_dir: Path,
    *,
    concurrency: int = 1,
    seed: int = 0,
    progress: Progress | None = None,
    normalize: Normalization = "official",
) -> dict[str, list[dict[str, Any]]]:
    """Every method in order (singles first: the picking baselines and the oracle reuse their records)."""
    results = {}
    for method in methods:
        results[method] = await run_method(
            service,
            dataset,
            method,
            out_dir,
            concurrency=concurrency,
            seed=seed,
            progress=progress,
            normalize=normalize,
        )
    return results
