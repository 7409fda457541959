"""Training runs: what a GRPO/SFT run was configured with, which stored runs it learnt from, its per-step
metrics and the checkpoint it produced."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import session_scope
from storage.models import TrainingRun, utcnow


def create_training_run(
    factory: sessionmaker[Session], kind: str, config: dict[str, Any], source_run_ids: list[int]
) -> int:
    with session_scope(factory) as session:
        row = TrainingRun(
            kind=kind, config=config, source_run_ids={"ids": source_run_ids}, metrics={"steps": []}
        )
        session.add(row)
        session.flush()
        return row.id


def log_training_step(factory: sessionmaker[Session], training_run_id: int, metrics: dict[str, Any]) -> None:
    with session_scope(factory) as session:
        row = session.get_one(TrainingRun, training_run_id)
        steps = list((row.metrics or {}).get("steps", []))
        steps.append(metrics)
        row.metrics = {"steps": steps}  # reassigned, so the JSON change is seen


def finish_training_run(
    factory: sessionmaker[Session], training_run_id: int, *, status: str, checkpoint: str | None
) -> None:
    with session_scope(factory) as session:
        row = session.get_one(TrainingRun, training_run_id)
        row.status, row.checkpoint, row.finished_at = status, checkpoint, utcnow()


def get_training_run(factory: sessionmaker[Session], training_run_id: int) -> TrainingRun | None:
    with factory() as session:
        return session.get(TrainingRun, training_run_id)


def training_run_for_checkpoint(factory: sessionmaker[Session], checkpoint: str) -> TrainingRun | None:
    """The newest finished training run that produced ``checkpoint`` (the path it stored), if any."""
    query = (
        select(TrainingRun)
        .where(TrainingRun.checkpoint == checkpoint, TrainingRun.status == "ok")
        .order_by(TrainingRun.id.desc())
        .limit(1)
    )
    with factory() as session:
        return session.scalar(query)
