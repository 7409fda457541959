"""Training rows for TRL, rendered with the graph's own prompt, from QA files or stored runs; the files
``routegraph traces export`` writes.

GRPO rows: ``{"prompt": [messages], "answers": [gold aliases], "models": [pool names], "question": str}``
(GRPOTrainer passes the extra columns to the reward functions).
SFT rows: ``{"prompt": [messages], "completion": [{"role": "assistant", "content": trajectory}]}``
(SFTTrainer's prompt-completion conversational format). Exported rows also carry their ``run_id``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from app.evaluation import qa_file
from app.pool import Pool
from graphs.answers import exact_match
from graphs.ports import ModelCard
from graphs.router_r1 import prompts
from storage import datasets, db
from training import output

Kind = Literal["grpo", "sft"]
FORMATS = ("jsonl", "parquet")


def router_prompt(question: str, models: Sequence[ModelCard]) -> list[dict[str, str]]:
    """Router-R1's prompt as chat messages in the conversational format TRL trainers read."""
    roles = {"system": "system", "human": "user"}
    return [{"role": roles[r], "content": c} for r, c in prompts.router_messages(question, models)]


def read_qa_file(path: str | Path, limit: int | None = None, seed: int | None = None) -> list[dict[str, Any]]:
    """QA rows ``{"id", "question", "answers"}`` from a JSONL / Parquet file, shuffled by ``seed``.

    Read by :func:`app.evaluation.qa_file.read_qa_file`, the reader evaluation uses too: a relative path is
    also looked up in the project, and a bad row is a ``DataError`` (a ValueError) naming file and line.
    """
    rows = [{"id": r.id, "question": r.question, "answers": r.answers} for r in qa_file.read_qa_file(path)]
    if seed is not None:
        random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def grpo_row(question: str, answers: list[str], models: Sequence[ModelCard]) -> dict[str, Any]:
    """One GRPO row: the router's prompt, and the columns the rewards read."""
    return {
        "prompt": router_prompt(question, models),
        "answers": answers,
        "models": [m.name for m in models],
        "question": question,
    }


def grpo_rows_from_qa(
    path: str | Path, pool: Pool, limit: int | None = None, seed: int | None = None
) -> list[dict[str, Any]]:
    return [grpo_row(row["question"], row["answers"], pool.models) for row in read_qa_file(path, limit, seed)]


def rows_from_records(
    records: Sequence[dict[str, Any]], models: Sequence[ModelCard], kind: Kind, *, labelled_only: bool
) -> list[dict[str, Any]]:
    """Stored-run records (``storage.datasets.records``) as TRL rows of one kind, each with its ``run_id``.

    GRPO: every record (``labelled_only``: those with gold answers; others get ``[]``).
    SFT: finished runs with a trajectory (``labelled_only``: whose answer matches its gold answers).
    """
    out: list[dict[str, Any]] = []
    for record in records:
        if kind == "grpo":
            out.append(
                {**grpo_row(record["question"], record["answers"], models), "run_id": record["run_id"]}
            )
            continue
        prompt = router_prompt(record["question"], models)
        trajectory = (record["trajectory"] or "").strip()
        if record["status"] != "ok" or not trajectory:
            continue
        if labelled_only and not exact_match(record["answer"] or "", record["answers"]):
            continue
        completion = [{"role": "assistant", "content": trajectory}]
        out.append({"prompt": prompt, "completion": completion, "run_id": record["run_id"]})
    return out


def stored_rows(
    factory: sessionmaker[Session],
    pool: Pool,
    kind: Kind = "grpo",
    *,
    since: datetime | None = None,
    graph: str | None = None,
    labelled_only: bool = False,
) -> list[dict[str, Any]]:
    """The trace store's runs as TRL rows (see :func:`rows_from_records`)."""
    records = datasets.records(factory, since=since, graph=graph, labelled_only=labelled_only)
    return rows_from_records(records, pool.models, kind, labelled_only=labelled_only)


def grpo_rows_from_runs(factory: sessionmaker[Session], pool: Pool) -> tuple[list[dict[str, Any]], list[int]]:
    """Labelled stored Router-R1 runs (pending questions included) as GRPO rows, with their run ids."""
    rows = stored_rows(factory, pool, "grpo", graph="router-r1", labelled_only=True)
    return [_without_run_id(row) for row in rows], [row["run_id"] for row in rows]


def sft_rows_from_runs(factory: sessionmaker[Session], pool: Pool) -> tuple[list[dict[str, Any]], list[int]]:
    """Successful stored trajectories: labelled runs answered right, in a well-formed format."""
    from graphs.router_r1.rewards import is_well_formed

    rows = [
        row
        for row in stored_rows(factory, pool, "sft", graph="router-r1", labelled_only=True)
        if is_well_formed(row["completion"][0]["content"], pool.names)
    ]
    return [_without_run_id(row) for row in rows], [row["run_id"] for row in rows]


def _without_run_id(row: dict[str, Any]) -> dict[str, Any]:
    # Trainers get the columns they read; the ids go to the training run's provenance instead.
    return {key: value for key, value in row.items() if key != "run_id"}


def synthetic_sft_rows(
    path: str | Path, pool: Pool, limit: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Format warm start: well-formed trajectories built from gold answers (one route, then the answer).

    An untrained small router never emits the protocol's tags, so GRPO would see no signal; a few SFT steps
    on these teach the format (R2-Reasoner's SFT-then-RL recipe does the same with real trajectories).
    """
    rng = random.Random(seed)
    rows = []
    for row in read_qa_file(path, limit, seed):
        model = rng.choice(pool.models).name
        gold = row["answers"][0]
        trajectory = (
            f"<think> I need a fact; {model} can answer this. </think>\n"
            f"<search> {model}: {row['question']} </search>"
            + prompts.information(gold)
            + f"<think> The information answers the question. </think>\n<answer> {gold} </answer>"
        )
        rows.append(
            {
                "prompt": router_prompt(row["question"], pool.models),
                "completion": [{"role": "assistant", "content": trajectory}],
            }
        )
    return rows


def r2_sft_rows_from_runs(
    factory: sessionmaker[Session], pool: Pool, max_subtasks: int = 4
) -> tuple[list[dict[str, Any]], list[int]]:
    """R2-Reasoner's SFT targets from runs answered right: the decomposer's and allocator's own outputs."""
    from graphs.r2_reasoner import prompts as r2

    rows, ids = [], []
    for record in datasets.records(factory, graph="r2-reasoner", labelled_only=True):
        if record["status"] != "ok" or not exact_match(record["answer"] or "", record["answers"]):
            continue
        question = record["question"]
        stored = db.get_run(factory, record["run_id"])
        assert stored is not None
        for hop in stored.hops:
            detail = hop.detail or {}
            if not hop.router_text or hop.error or detail.get("given"):
                continue
            if hop.node == "decompose":
                messages = r2.decompose_messages(question, max_subtasks)
            elif hop.node == "allocate":
                decompose = next((h for h in stored.hops if h.node == "decompose"), None)
                plan = (decompose.detail or {}).get("subtasks") if decompose else None
                if not plan:
                    continue
                subtasks = [r2.Subtask(**item) for item in plan]
                messages = r2.allocate_messages(subtasks, pool.models)
            else:
                continue
            roles = {"system": "system", "human": "user"}
            rows.append(
                {
                    "prompt": [{"role": roles[r], "content": c} for r, c in messages],
                    "completion": [{"role": "assistant", "content": hop.router_text}],
                }
            )
        ids.append(record["run_id"])
    return rows, ids


def write(
    rows: list[dict[str, Any]],
    out: str | Path,
    fmt: str = "jsonl",
    *,
    force: bool = False,
    protected: Sequence[Path] = (),
) -> Path:
    """Write rows as JSON lines or Parquet (both load with ``datasets.load_dataset``), every format through
    :mod:`training.output`: never over ``protected`` (the trace store's files), over an existing file only
    with ``force``, and all at once (a temporary file renamed into place)."""
    path = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    output.check_target(path, force=force, protected=protected)
    with output.replacing(path) as temporary:
        if fmt == "jsonl":
            with temporary.open("w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), temporary)
    return path


def load(factory: sessionmaker[Session], pool: Pool, kind: Kind = "grpo", **filters: Any) -> Any:
    """Stored rows as a ``datasets.Dataset``, ready for GRPOTrainer / SFTTrainer."""
    from datasets import Dataset

    return Dataset.from_list(stored_rows(factory, pool, kind, **{"labelled_only": True, **filters}))
