"""Judgements of stored runs and the Router-R1 rewards they earn: reads a run and its gold answers, scores
it with :func:`graphs.router_r1.rewards.score_trajectory` and stores a ``Reward`` row."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from app.service.registry import SCORED_GRAPHS
from graphs.router_r1.rewards import RewardConfig, score_trajectory
from storage import db


def add_feedback(
    factory: sessionmaker[Session],
    run_id: int,
    label: str,
    gold_answer: str | None,
    *,
    source: str,
    config: RewardConfig,
    models: Sequence[str],
) -> int:
    """Record a judgement of a run (ValueError for an unknown label, run or empty gold); a gold answer
    scores the run at once."""
    feedback_id = db.add_feedback(factory, run_id, label, gold_answer=gold_answer, source=source)
    if label == "gold":
        score_run(factory, run_id, config, models)
    return feedback_id


def score_run(
    factory: sessionmaker[Session], run_id: int, config: RewardConfig, models: Sequence[str]
) -> int | None:
    """Store Router-R1's reward (format, outcome, cost, total) of a finished run against its newest gold
    answer; the reward row's id, or None when there is nothing to score (no gold answer, not finished,
    not a Router-R1 trajectory). The cost part is normalised against the graph's recent runs.

    ``models``: the pool's names, for a run whose pool snapshot lists none.
    """
    if not db.has_gold_answer(factory, run_id):  # every finished run comes here; most have none
        return None
    golds = [f for f in db.feedback_for(factory, run_id) if f.label == "gold" and f.gold_answer]
    if not golds:
        return None
    run = db.get_run(factory, run_id)
    if run is None or run.graph not in SCORED_GRAPHS or run.status != "ok" or not run.trajectory:
        return None
    gold = golds[-1]
    answers = list(gold.gold_aliases or [str(gold.gold_answer)])
    snapshot_models = (run.pool_snapshot or {}).get("models") or []
    names = [str(m["name"]) for m in snapshot_models] or list(models)
    recent = db.recent_costs(factory, graph=run.graph, before_run_id=run_id, limit=config.window - 1)
    parts = score_trajectory(run.trajectory, answers, run.total_cost, names, config, recent)
    return db.add_reward(
        factory,
        run_id,
        format=parts.format,
        outcome=parts.outcome,
        cost=parts.cost,
        total=parts.total,
        reward_config={
            **config.as_dict(),
            "feedback_id": gold.id,
            "answers": answers,
            "reference_runs": len(recent),
        },
    )


def score_labelled(factory: sessionmaker[Session], config: RewardConfig, models: Sequence[str]) -> int:
    """Score every finished run whose newest gold answer has no reward yet (after ``import-qa``)."""
    scored = 0
    for run_id, feedback_id in db.newest_gold_feedback(factory, graphs=SCORED_GRAPHS).items():
        rewarded = {(r.reward_config or {}).get("feedback_id") for r in db.rewards_for(factory, run_id)}
        if feedback_id not in rewarded and score_run(factory, run_id, config, models) is not None:
            scored += 1
    return scored
