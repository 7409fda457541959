"""Training rows for TRL, rendered with the graph's own prompt.

GRPO rows: ``{"prompt": [messages], "answers": [gold aliases], "models": [pool names], "question": str}``.
SFT rows: ``{"prompt": [messages], "completion": [{"role": "assistant", "content": trajectory}]}``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.evaluation import qa_file
from app.pool import ModelEntry, Pool
from graphs.router_r1 import prompts
from storage import db


def router_prompt(question: str, models: Sequence[ModelEntry]) -> list[dict[str, str]]:
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


def grpo_rows_from_qa(
    path: str | Path, pool: Pool, limit: int | None = None, seed: int | None = None
) -> list[dict[str, Any]]:
    return [
        {
            "prompt": router_prompt(row["question"], pool.models),
            "answers": row["answers"],
            "models": pool.names,
            "question": row["question"],
        }
        for row in read_qa_file(path, limit, seed)
    ]


def grpo_rows_from_runs(factory: sessionmaker[Session], pool: Pool) -> tuple[list[dict[str, Any]], list[int]]:
    """Labelled stored Router-R1 runs (gold answers from feedback) as GRPO rows, with their run ids."""
    rows, ids = [], []
    for run, golds in db.labelled_runs(factory, graph="router-r1"):
        rows.append(
            {
                "prompt": router_prompt(run.question, pool.models),
                "answers": golds,
                "models": pool.names,
                "question": run.question,
            }
        )
        ids.append(run.id)
    return rows, ids


def sft_rows_from_runs(factory: sessionmaker[Session], pool: Pool) -> tuple[list[dict[str, Any]], list[int]]:
    """Successful stored trajectories: labelled runs answered right, in a well-formed format."""
    from app.metrics import exact_match
    from training.rewards import is_well_formed

    rows, ids = [], []
    for run, golds in db.labelled_runs(factory, graph="router-r1"):
        trajectory = (run.trajectory or "").strip()
        if not trajectory or not is_well_formed(trajectory, pool.names):
            continue
        if not exact_match(run.answer or "", golds):
            continue
        rows.append(
            {
                "prompt": router_prompt(run.question, pool.models),
                "completion": [{"role": "assistant", "content": trajectory}],
            }
        )
        ids.append(run.id)
    return rows, ids


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
    from app.metrics import exact_match
    from graphs.r2_reasoner import prompts as r2

    rows, ids = [], []
    for run, golds in db.labelled_runs(factory, graph="r2-reasoner"):
        if not exact_match(run.answer or "", golds):
            continue
        stored = db.get_run(factory, run.id)
        assert stored is not None
        for hop in stored.hops:
            detail = hop.detail or {}
            if not hop.router_text or hop.error or detail.get("given"):
                continue
            if hop.node == "decompose":
                messages = r2.decompose_messages(run.question, max_subtasks)
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
        ids.append(run.id)
    return rows, ids
