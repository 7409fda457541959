"""Recorded-outcome rows and the deterministic train/dev split every router is compared on."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.pool import ModelEntry

SPLIT_SEED = 13
DEV_FRACTION = 0.2
ROUTER_QUESTION_CHARS = 400
"""An LLM router sees a query's first characters only: enough to tell the task, and it keeps the prompt
(already ~1,000 tokens of model descriptors) short enough to train on a CPU. Training and evaluation
share it."""


class DataError(ValueError):
    """An outcome file that cannot be read as queries with scores: names the file and line."""


@dataclass(frozen=True)
class Query:
    """One recorded query: its text, task and every candidate's score (keyed by served model id)."""

    id: str
    task: str
    question: str
    scores: dict[str, float]
    line: int = field(default=0, compare=False)
    """Line of the outcome file it came from (for error messages)."""


def load_queries(path: str | Path) -> list[Query]:
    """Queries from an outcome JSONL file (id, task, question, scores); ``DataError`` names file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: outcome file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the outcome file ({exc})") from None
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 occurs in questions
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            query = Query(
                id=str(r["id"]),
                task=str(r.get("task", "all")),
                question=str(r["question"]),
                scores={str(k): float(v) for k, v in r["scores"].items()},
                line=number,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"{path}:{number}: expected a JSON object with id, question and scores "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if not query.question.strip() or not query.scores:
            raise DataError(f"{path}:{number}: empty question or no scores")
        if query.id in seen:
            raise DataError(f"{path}:{number}: id {query.id!r} repeats line {seen[query.id]}")
        seen[query.id] = number
        queries.append(query)
    if not queries:
        raise DataError(f"{path}: no queries in the outcome file")
    return queries


def require_scores(queries: Sequence[Query], models: Sequence[ModelEntry], path: str | Path) -> None:
    """Every query must score every candidate: else a ``DataError`` naming the first line that does not."""
    for query in queries:
        missing = [m.served_id for m in models if m.served_id not in query.scores]
        if missing:
            raise DataError(f"{path}:{query.line}: no score for {', '.join(missing)}")


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
