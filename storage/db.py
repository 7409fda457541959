"""Engines, sessions and the small query functions the rest of routegraph uses."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, selectinload, sessionmaker
from sqlalchemy.pool import StaticPool

from storage.models import FEEDBACK_LABELS, Base, Feedback, Hop, Run, TrainingRun, utcnow

SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(RuntimeError):
    """The trace store cannot be opened or written; the message names the database."""


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables in place; SQLite gets WAL, a busy timeout and foreign keys."""
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        _check_sqlite_file(url)
    if url in ("sqlite://", "sqlite:///:memory:"):
        # One shared connection, or each thread would see its own empty in-memory database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        engine = create_engine(url, connect_args={"timeout": 30} if is_sqlite else {})
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        Base.metadata.create_all(engine)
    except (DatabaseError, OperationalError) as exc:
        raise StoreError(f"cannot open trace store {engine.url.render_as_string()}: {exc.orig}") from None
    return engine


def _check_sqlite_file(url: str) -> None:
    """Refuse a file that is not a SQLite database before SQLite touches it (it would be left as is)."""
    database = url.split("///", 1)[1] if "///" in url else ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    try:
        if path.exists():
            with path.open("rb") as handle:
                header = handle.read(16)
            if header and header != SQLITE_MAGIC:
                raise StoreError(f"{path} is not a SQLite database (set ROUTEGRAPH_DATABASE_URL elsewhere)")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a directory at the path, no permission, a file where a folder should be
        raise StoreError(f"cannot open trace store {path}: {exc.strerror or exc}") from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session


# -- writes ----------------------------------------------------------------------------------------------
def create_run(factory: sessionmaker[Session], **fields: Any) -> int:
    with session_scope(factory) as session:
        run = Run(**fields)
        session.add(run)
        session.flush()
        return run.id


def add_hop(factory: sessionmaker[Session], run_id: int, index: int, **fields: Any) -> None:
    """Commit one hop at once and keep the run's totals equal to the sum of its hops."""
    with session_scope(factory) as session:
        session.add(Hop(run_id=run_id, index=index, **fields))
        run = session.get_one(Run, run_id)
        run.total_cost += fields.get("cost", 0.0)
        run.input_tokens += fields.get("input_tokens", 0)
        run.output_tokens += fields.get("output_tokens", 0)


def finish_run(
    factory: sessionmaker[Session],
    run_id: int,
    *,
    status: str,
    answer: str | None,
    error: str | None,
    trajectory: str | None = None,
) -> None:
    with session_scope(factory) as session:
        run = session.get_one(Run, run_id)
        run.status, run.answer, run.error, run.trajectory = status, answer, error, trajectory
        run.finished_at = utcnow()
        run.latency_s = (run.finished_at - run.created_at).total_seconds()


# -- reads -----------------------------------------------------------------------------------------------
def list_runs(
    factory: sessionmaker[Session],
    *,
    limit: int = 50,
    graph: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    min_cost: float | None = None,
    max_cost: float | None = None,
    model: str | None = None,
) -> Sequence[Run]:
    """Newest runs first; ``until`` is exclusive, ``model`` keeps runs with at least one hop by that model."""
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if graph:
        query = query.where(Run.graph == graph)
    if status:
        query = query.where(Run.status == status)
    if since:
        query = query.where(Run.created_at >= since)
    if until:
        query = query.where(Run.created_at < until)
    if min_cost is not None:
        query = query.where(Run.total_cost >= min_cost)
    if max_cost is not None:
        query = query.where(Run.total_cost <= max_cost)
    if model:
        query = query.where(Run.id.in_(select(Hop.run_id).where(Hop.model == model)))
    with factory() as session:
        return session.scalars(query).all()


def get_run(factory: sessionmaker[Session], run_id: int) -> Run | None:
    with factory() as session:
        return session.scalar(select(Run).where(Run.id == run_id).options(selectinload(Run.hops)))


def hop_sums(factory: sessionmaker[Session], run_id: int) -> tuple[float, int, int]:
    with factory() as session:
        row = session.execute(
            select(
                func.coalesce(func.sum(Hop.cost), 0.0),
                func.coalesce(func.sum(Hop.input_tokens), 0),
                func.coalesce(func.sum(Hop.output_tokens), 0),
            ).where(Hop.run_id == run_id)
        ).one()
        return float(row[0]), int(row[1]), int(row[2])


def mark_orphaned(factory: sessionmaker[Session], host: str, is_alive: Callable[[int], bool]) -> int:
    """Runs of this host left 'running' by a process that no longer exists become 'failed'.

    Their hops were committed one by one, so the partial trace stays readable.
    """
    with session_scope(factory) as session:
        # startswith with autoescape: '_' and '%' in a host name are literal characters, not wildcards.
        mine = Run.owner.startswith(f"{host}:", autoescape=True)
        runs = session.scalars(select(Run).where(Run.status == "running", mine)).all()
        orphaned = [run for run in runs if not is_alive(int(str(run.owner).rsplit(":", 1)[1]))]
        for run in orphaned:
            run.status = "failed"
            run.error = run.error or "interrupted: the process running it stopped mid-run"
            run.finished_at = utcnow()
        return len(orphaned)


# -- feedback and aggregates -------------------------------------------------------------------------------
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


def model_usage(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Per model: calls, tokens and spend over every stored hop (hops without a model are left out)."""
    query = (
        select(
            Hop.model,
            func.count(Hop.id),
            func.coalesce(func.sum(Hop.input_tokens), 0),
            func.coalesce(func.sum(Hop.output_tokens), 0),
            func.coalesce(func.sum(Hop.cost), 0.0),
        )
        .where(Hop.model.is_not(None))
        .group_by(Hop.model)
        .order_by(Hop.model)
    )
    with factory() as session:
        rows = session.execute(query).all()
    return [
        {
            "model": model,
            "calls": int(calls),
            "input_tokens": int(tokens_in),
            "output_tokens": int(tokens_out),
            "cost": float(cost),
        }
        for model, calls, tokens_in, tokens_out, cost in rows
    ]


# -- training runs ---------------------------------------------------------------------------------------
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


def labelled_runs(factory: sessionmaker[Session], graph: str = "router-r1") -> list[tuple[Run, list[str]]]:
    """Finished runs with a gold answer (or an answer marked correct), with their gold aliases."""
    latest = latest_feedback(factory)
    with factory() as session:
        runs = session.scalars(
            select(Run).where(Run.graph == graph, Run.status == "ok", Run.id.in_(list(latest)))
        ).all()
    labelled = []
    for run in runs:
        feedback = latest[run.id]
        if feedback.label == "gold" and feedback.gold_answer:
            labelled.append((run, [feedback.gold_answer]))
        elif feedback.label == "correct" and run.answer:
            labelled.append((run, [run.answer]))
    return labelled
