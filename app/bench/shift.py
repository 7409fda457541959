"""Evaluation under task shift: leave-one-task-out folds, pooled results, and dev re-weighted to another mix.

- Leave-one-task-out (LOTO): for each task, fit on every other task and route the held-out task's queries;
  the held-out predictions of all tasks are pooled into one curve per router. No router ever sees a
  query of the task it is tested on.
- Re-weighted: the in-mix dev queries, each weighted so that the tasks count as a different mix says
  (uniform by default: every task as much as any other), which is what a user whose traffic is not the
  training mix sees, with the same routers and picks.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from app.bench import leaderboard
from app.bench.data import Query
from app.bench.leaderboard import Point, from_queries
from app.bench.routers import Router
from app.pool import Pool


def leave_one_task_out(queries: Sequence[Query]) -> list[tuple[str, list[Query], list[Query]]]:
    """(held-out task, train = every other task's queries, test = the task's queries), by task name."""
    tasks = sorted({q.task for q in queries})
    if len(tasks) < 2:
        raise ValueError(f"leave-one-task-out needs at least two tasks; the queries have {tasks}")
    return [(t, [q for q in queries if q.task != t], [q for q in queries if q.task == t]) for t in tasks]


def merge(points: Sequence[Point]) -> Point:
    """One point from the same router and knob on disjoint query sets (the LOTO folds), query-weighted."""
    if not points:
        raise ValueError("nothing to merge")
    return from_queries(
        points[0].label, points[0].knob,
        [i for p in points for i in p.ids], [t for p in points for t in p.tasks],
        [s for p in points for s in p.query_scores], [c for p in points for c in p.query_prices],
        [c for p in points for c in p.chosen], [c for p in points for c in p.query_costs],
    )  # fmt: skip


async def loto_curves(
    build: Callable[[], Sequence[Router]],
    queries: Sequence[Query],
    pool: Pool,
    on_fold: Callable[[str], None] | None = None,
) -> dict[str, list[Point]]:
    """Every router ``build()`` makes, fitted fresh per fold, swept on the held-out task; folds pooled."""
    per_label: dict[str, list[list[Point]]] = defaultdict(list)
    for task, train, test in leave_one_task_out(queries):
        if on_fold:
            on_fold(task)
        for router in build():
            router.fit(train, pool.models)
            per_label[router.label].append(await leaderboard.sweep(router, test, pool))
    return {
        label: [merge([fold[i] for fold in folds]) for i in range(len(folds[0]))]
        for label, folds in per_label.items()
    }


def parse_mix(spec: str) -> dict[str, float] | None:
    """'uniform' (None: every task equal) or 'task=weight,task=weight' (weights need not sum to 1)."""
    if spec.strip() == "uniform":
        return None
    mix: dict[str, float] = {}
    for part in spec.split(","):
        task, sep, value = part.partition("=")
        try:
            mix[task.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not task.strip() or mix[task.strip()] < 0:
            raise ValueError(f"task mix {spec!r}: expected 'uniform' or task=weight pairs, got {part!r}")
    if sum(mix.values()) <= 0:
        raise ValueError(f"task mix {spec!r}: the weights sum to 0")
    return mix


def mix_weights(tasks: Sequence[str], mix: dict[str, float] | None = None) -> np.ndarray:
    """Per-query weights that make the tasks' shares those of ``mix`` (None: uniform), normalised to mean 1.

    A task the mix leaves out gets weight 0; a task in the mix with no query is an error."""
    counts = Counter(tasks)
    target = mix if mix is not None else {t: 1.0 for t in counts}
    missing = [t for t, w in target.items() if w > 0 and t not in counts]
    if missing:
        raise ValueError(f"task mix names tasks with no queries: {missing}")
    total = sum(target.get(t, 0.0) for t in counts)
    weights = np.array([target.get(t, 0.0) / total / (counts[t] / len(tasks)) for t in tasks])
    return weights / weights.mean()
