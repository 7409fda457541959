"""Stored runs as the rows TRL's trainers read, and the files ``routegraph traces export`` writes.

GRPO rows: ``{"prompt": [messages], "answers": [gold aliases], "models": [pool names], "question",
"run_id"}`` (GRPOTrainer passes the extra columns to the reward functions).
SFT rows: ``{"prompt": [messages], "completion": [{"role": "assistant", "content": trajectory}],
"run_id"}`` (SFTTrainer's prompt-completion conversational format).

The prompt is Router-R1's router prompt over the pool's models, as ``training/data.py`` renders it.
The records come from ``storage.datasets.records`` (storage renders no prompts: it may not import graphs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from app.metrics import exact_match
from app.pool import ModelEntry, Pool
from graphs.router_r1 import prompts
from storage import datasets

Kind = Literal["grpo", "sft"]
FORMATS = ("jsonl", "parquet")


def messages(question: str, models: Sequence[ModelEntry]) -> list[dict[str, str]]:
    roles = {"system": "system", "human": "user"}
    return [{"role": roles[r], "content": c} for r, c in prompts.router_messages(question, models)]


def rows(
    factory: sessionmaker[Session],
    pool: Pool,
    kind: Kind = "grpo",
    *,
    since: datetime | None = None,
    graph: str | None = None,
    labelled_only: bool = False,
) -> list[dict[str, Any]]:
    """Training rows of one kind from the store.

    GRPO: every finished or pending run (``labelled_only``: those with gold answers; others get ``[]``).
    SFT: finished runs with a trajectory (``labelled_only``: whose answer matches its gold answers).
    """
    out: list[dict[str, Any]] = []
    for record in datasets.records(factory, since=since, graph=graph, labelled_only=labelled_only):
        prompt = messages(record["question"], pool.models)
        if kind == "grpo":
            out.append(
                {
                    "prompt": prompt,
                    "answers": record["answers"],
                    "models": pool.names,
                    "question": record["question"],
                    "run_id": record["run_id"],
                }
            )
            continue
        trajectory = (record["trajectory"] or "").strip()
        if record["status"] != "ok" or not trajectory:
            continue
        if labelled_only and not exact_match(record["answer"] or "", record["answers"]):
            continue
        out.append(
            {
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": trajectory}],
                "run_id": record["run_id"],
            }
        )
    return out


def write(rows: list[dict[str, Any]], out: str | Path, fmt: str = "jsonl") -> Path:
    """Write rows as JSON lines or Parquet (both load with ``datasets.load_dataset``)."""
    path = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def load(
    factory: sessionmaker[Session],
    pool: Pool,
    kind: Kind = "grpo",
    *,
    since: datetime | None = None,
    graph: str | None = None,
    labelled_only: bool = True,
) -> Any:
    """The rows as a ``datasets.Dataset``, ready for GRPOTrainer / SFTTrainer.

    (The issue asked for ``storage.datasets.load``; rendering prompts needs graphs, which storage may not
    import, so the storage half is ``storage.datasets.records`` and this is the loading half.)
    """
    from datasets import Dataset

    return Dataset.from_list(rows(factory, pool, kind, since=since, graph=graph, labelled_only=labelled_only))
