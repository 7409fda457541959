"""Typed SQLAlchemy 2 models of the trace store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, ForeignKey, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class Run(Base):
    """One question answered (or attempted) by a graph."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    question: Mapped[str] = mapped_column(Text)
    graph: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    """running → ok | failed."""
    answer: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    router_model: Mapped[str | None] = mapped_column(String(200))
    pool_snapshot: Mapped[dict[str, Any] | None]
    """Pool entries and prices in force when the run started: later price changes never rewrite history."""
    total_cost: Mapped[float] = mapped_column(default=0.0)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    latency_s: Mapped[float] = mapped_column(default=0.0)
    trajectory: Mapped[str | None] = mapped_column(Text)
    """The router's full text (Router-R1: thoughts, route calls, information, answer): an SFT target."""
    owner: Mapped[str | None] = mapped_column(String(200))
    """host:pid of the process running it, so a later process can tell a crashed run from a live one."""
    graph_version: Mapped[str | None] = mapped_column(String(64))
    """Version of the graph code that ran it (routegraph's version, or a graph-specific tag)."""
    router_checkpoint: Mapped[str | None] = mapped_column(Text)
    """The router weights used (a checkpoint path or model id), so traces tie back to a training run."""
    options: Mapped[dict[str, Any] | None]
    """What the run was asked with besides the question ({"budget_usd", "max_turns"}; None: the defaults).
    Resuming an interrupted run continues under the same options."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]

    hops: Mapped[list[Hop]] = relationship(
        back_populates="run", order_by="Hop.index", cascade="all, delete-orphan"
    )


class Hop(Base):
    """One model call (or refused call) within a run, committed as it happens."""

    __tablename__ = "hops"
    __table_args__ = (Index("ix_hops_run_index", "run_id", "index", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    index: Mapped[int]
    node: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(200), index=True)
    subtask_id: Mapped[str | None] = mapped_column(String(64))
    sub_query: Mapped[str | None] = mapped_column(Text)
    router_text: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[float] = mapped_column(default=0.0)
    latency_s: Mapped[float] = mapped_column(default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None]
    started_at: Mapped[datetime | None]

    run: Mapped[Run] = relationship(back_populates="hops")


FEEDBACK_LABELS = ("correct", "incorrect", "gold")


class Feedback(Base):
    """A judgement of a run's answer: marked correct/incorrect, or a gold answer to compare it with."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(16))
    """correct | incorrect | gold (then gold_answer holds the expected answer)."""
    gold_answer: Mapped[str | None] = mapped_column(Text)
    gold_aliases: Mapped[list[str] | None] = mapped_column(JSON)
    """Every accepted answer (a QA dataset's aliases); gold_answer is the first. None: gold_answer only."""
    source: Mapped[str] = mapped_column(String(32), default="user", index=True)
    """user (the UI, the CLI, the API) | dataset (``routegraph traces import-qa``)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Reward(Base):
    """One scored run: the reward's parts and the configuration that weighed them."""

    __tablename__ = "rewards"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    format: Mapped[float] = mapped_column(default=0.0)
    outcome: Mapped[float] = mapped_column(default=0.0)
    cost: Mapped[float] = mapped_column(default=0.0)
    total: Mapped[float] = mapped_column(default=0.0)
    reward_config: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelResponse(Base):
    """The replay cache: one model's answer to one exact request, so training and evaluation re-use it."""

    __tablename__ = "model_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    """sha256 of (model, normalised prompt, decoding parameters)."""
    model: Mapped[str] = mapped_column(String(200), index=True)
    prompt_hash: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None]
    response_text: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """One GRPO or SFT run: config, the stored runs it learned from, its checkpoint, per-step metrics."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """grpo | sft."""
    config: Mapped[dict[str, Any]]
    source_run_ids: Mapped[dict[str, Any] | None]
    """{"ids": [...]} of stored runs used as training data (QA-file rows have none)."""
    status: Mapped[str] = mapped_column(String(16), default="running")
    checkpoint: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None]
    """{"steps": [{step, reward, format_rate, accuracy, cost, ...}, ...]}."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
