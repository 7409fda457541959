"""Judgements of runs (feedback, gold answers) and the rewards they earn, and the one rule for which runs
count as labelled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    bindparam,
    func,
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import engine_of, session_scope
from storage.models import FEEDBACK_LABELS, Feedback, Reward, Run


def add_feedback(
    factory: sessionmaker[Session],
    run_id: int,
    label: str,
    *,
    gold_answer: str | None = None,
    source: str = "user",
) -> int:
    """Store one judgement of a run; a 'gold' label needs the gold answer."""
    if label not in FEEDBACK_LABELS:
        raise ValueError(f"unknown feedback label {label!r}; choose one of {', '.join(FEEDBACK_LABELS)}")
    gold = (gold_answer or "").strip() or None
    if label == "gold" and gold is None:
        raise ValueError("a 'gold' label needs a non-empty gold answer")
    with session_scope(factory) as session:
        if session.get(Run, run_id) is None:
            raise ValueError(f"no run {run_id}")
        feedback = Feedback(run_id=run_id, label=label, gold_answer=gold, source=source)
        session.add(feedback)
        session.flush()
        return feedback.id


_GOLD_OF_RUN = (
    select(Feedback.id).where(Feedback.run_id == bindparam("run"), Feedback.label == "gold").limit(1)
)


def has_gold_answer(factory: sessionmaker[Session], run_id: int) -> bool:
    """Whether a run has gold feedback: one indexed lookup, asked for every run that finishes."""
    with engine_of(factory).connect() as connection:
        return connection.execute(_GOLD_OF_RUN, {"run": run_id}).first() is not None


def feedback_for(factory: sessionmaker[Session], run_id: int) -> Sequence[Feedback]:
    """A run's feedback, oldest first."""
    with factory() as session:
        query = select(Feedback).where(Feedback.run_id == run_id).order_by(Feedback.id)
        return session.scalars(query).all()


def latest_feedback(factory: sessionmaker[Session]) -> dict[int, Feedback]:
    """The newest feedback of every run that has some, by run id."""
    with factory() as session:
        rows = session.scalars(select(Feedback).order_by(Feedback.id)).all()
    return {row.run_id: row for row in rows}


def add_reward(
    factory: sessionmaker[Session],
    run_id: int,
    *,
    format: float,
    outcome: float,
    cost: float,
    total: float,
    reward_config: dict[str, Any],
) -> int:
    """Store one scoring of a run: the reward's parts, its total and the configuration that weighed them."""
    with session_scope(factory) as session:
        row = Reward(
            run_id=run_id, format=format, outcome=outcome, cost=cost, total=total, reward_config=reward_config
        )
        session.add(row)
        session.flush()
        return row.id


def rewards_for(factory: sessionmaker[Session], run_id: int) -> Sequence[Reward]:
    """A run's rewards, oldest first."""
    with factory() as session:
        return session.scalars(select(Reward).where(Reward.run_id == run_id).order_by(Reward.id)).all()


def newest_gold_feedback(factory: sessionmaker[Session], *, graphs: Sequence[str]) -> dict[int, int]:
    """Finished (``ok``) runs of ``graphs`` with a gold answer: run id → id of its newest gold feedback."""
    query = (
        select(Feedback.run_id, func.max(Feedback.id))
        .join(Run, Run.id == Feedback.run_id)
        .where(Feedback.label == "gold", Run.status == "ok", Run.graph.in_(list(graphs)))
        .group_by(Feedback.run_id)
    )
    with factory() as session:
        return {int(run_id): int(feedback_id) for run_id, feedback_id in session.execute(query)}


def recent_costs(
    factory: sessionmaker[Session], *, graph: str, before_run_id: int, limit: int
) -> list[float]:
    """Total costs of the newest ``limit`` finished (``ok``) runs of ``graph`` older than the given run."""
    query = (
        select(Run.total_cost)
        .where(Run.graph == graph, Run.status == "ok", Run.id < before_run_id)
        .order_by(Run.id.desc())
        .limit(limit)
    )
    with factory() as session:
        return [float(cost) for cost in session.scalars(query)]


def label_answers(label: Feedback | None, run_answer: str | None) -> tuple[list[str], bool | None]:
    """The one rule for what a run's latest feedback says: (gold answers, judged correct).

    A ``gold`` label gives its aliases; ``correct`` makes the run's own answer the gold one; ``incorrect``
    gives none. ``correct`` is None when nobody judged the run.
    """
    if label is not None and label.label == "gold" and label.gold_answer:
        return list(label.gold_aliases or [label.gold_answer]), None
    if label is not None and label.label == "correct" and run_answer:
        return [run_answer], True
    if label is not None and label.label == "incorrect":
        return [], False
    return [], None
