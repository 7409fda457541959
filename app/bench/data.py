"""Recorded-outcome rows and the deterministic train/dev split every router is compared on."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.pool import ModelEntry

SPLIT_SEED = 13
DEV_FRACTION = 0.2
ROUTER_QUESTION_CHARS = 400
"""An LLM router sees a query's first characters only: enough to tell the task, and it keeps the prompt
(already ~1,000 tokens of model descriptors) short enough to train on a CPU. Training and evaluation
share it."""


@dataclass(frozen=True)
class Query:
    """One recorded query: its text, task and every candidate's score (keyed by served model id)."""

    id: str
    task: str
    question: str
    scores: dict[str, float]


def load_queries(path: str | Path) -> list[Query]:
    text = Path(path).read_text()
    rows = [json.loads(line) for line in text.split("\n") if line.strip()]  # U+2028 occurs in questions
    return [
        Query(
            id=str(r["id"]),
            task=str(r.get("task", "all")),
            question=str(r["question"]),
            scores={str(k): float(v) for k, v in r["scores"].items()},
        )
        for r in rows
    ]


def split(
    queries: Sequence[Query], dev_fraction: float = DEV_FRACTION, seed: int = SPLIT_SEED
) -> tuple[list[Query], list[Query]]:
    """(train, dev): per task, a seeded shuffle puts ``dev_fraction`` of its queries in dev; order kept."""
    by_task: dict[str, list[Query]] = defaultdict(list)
    for q in queries:
        by_task[q.task].append(q)
    rng = random.Random(seed)
    dev_ids: set[str] = set()
    for task in sorted(by_task):
        ids = sorted(q.id for q in by_task[task])
        rng.shuffle(ids)
        dev_ids.update(ids[: round(len(ids) * dev_fraction)])
    return [q for q in queries if q.id not in dev_ids], [q for q in queries if q.id in dev_ids]


def stratified(queries: Sequence[Query], n: int) -> list[Query]:
    """``n`` queries taken round-robin over tasks (each task's in file order): a slice every task is in."""
    by_task: dict[str, list[Query]] = defaultdict(list)
    for q in queries:
        by_task[q.task].append(q)
    queues = [list(reversed(by_task[t])) for t in sorted(by_task)]
    picked: list[Query] = []
    while len(picked) < min(n, len(queries)):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return picked


def router_question(query: Query) -> str:
    """The query text an LLM router is shown (cut at ``ROUTER_QUESTION_CHARS``, marked with an ellipsis)."""
    text = query.question.strip()
    return text if len(text) <= ROUTER_QUESTION_CHARS else text[:ROUTER_QUESTION_CHARS].rstrip() + " …"


def price(entry: ModelEntry) -> float:
    """A model's price in USD per 1M tokens, input and output averaged (the leaderboard's cost axis)."""
    return (entry.price_in + entry.price_out) / 2


def score_of(query: Query, entry: ModelEntry) -> float:
    return query.scores[entry.served_id]
