"""Runs and their hops: the writes every graph run makes (one commit per hop, totals kept equal to the
sum of the hops), claiming a run to resume it, and the reads the service and the UI make."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, selectinload, sessionmaker

from storage.engine import retry_busy, session_scope, write_connection
from storage.models import Base, Hop, Run, utcnow

_HOPS = Base.metadata.tables["hops"]
_RUNS = Base.metadata.tables["runs"]
_INSERT_RUN = insert(_RUNS).returning(_RUNS.c.id)
_RUN_CREATED_AT = select(_RUNS.c.created_at).where(_RUNS.c.id == bindparam("run"))


def create_run(factory: sessionmaker[Session], **fields: Any) -> int:
    def write() -> int:
        with write_connection(factory) as connection:
            return int(connection.execute(_INSERT_RUN, fields).scalar_one())

    return retry_busy(write)


_ADD_TO_TOTALS = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("run"))
    .values(
        total_cost=_RUNS.c.total_cost + bindparam("d_cost"),
        input_tokens=_RUNS.c.input_tokens + bindparam("d_in"),
        output_tokens=_RUNS.c.output_tokens + bindparam("d_out"),
    )
)
"""Built once: SQLAlchemy then reuses its compiled form for every hop."""
_INSERT_HOP = insert(_HOPS)


def add_hop(factory: sessionmaker[Session], run_id: int, index: int, **fields: Any) -> None:
    """Commit one hop at once and keep the run's totals equal to the sum of its hops.

    Two statements in one write transaction (``BEGIN IMMEDIATE`` on SQLite): an in-place ``UPDATE runs
    SET total = total + x`` (no read of the run, so concurrent hops of one run never lose an update) and
    the hop's INSERT. Core statements on a plain connection, built once: no ORM unit of work per hop.
    """
    totals = {
        "run": run_id,
        "d_cost": fields.get("cost", 0.0),
        "d_in": fields.get("input_tokens", 0),
        "d_out": fields.get("output_tokens", 0),
    }
    row = {**fields, "run_id": run_id, "index": index}

    def write() -> None:
        with write_connection(factory) as connection:
            if connection.execute(_ADD_TO_TOTALS, totals).rowcount == 0:
                raise ValueError(f"no run {run_id}")
            connection.execute(_INSERT_HOP, row)

    retry_busy(write)


def finish_run(
    factory: sessionmaker[Session],
    run_id: int,
    *,
    status: str,
    answer: str | None,
    error: str | None,
    trajectory: str | None = None,
) -> None:
    def write() -> None:
        with write_connection(factory) as connection:
            created_at = connection.execute(_RUN_CREATED_AT, {"run": run_id}).scalar_one()
            finished_at = utcnow()
            finish = update(_RUNS).where(_RUNS.c.id == run_id)
            connection.execute(
                finish.values(
                    status=status,
                    answer=answer,
                    error=error,
                    trajectory=trajectory,
                    finished_at=finished_at,
                    latency_s=(finished_at - created_at).total_seconds(),
                )
            )

    retry_busy(write)


def claim_run(
    factory: sessionmaker[Session], run_id: int, owner: str, *, status: str, previous_owner: str | None
) -> bool:
    """Make ``owner`` the process running the run again (resuming it): 'running', error and end cleared.

    Only when the run is still in ``status`` under ``previous_owner`` (a compare-and-set), so of two
    processes resuming one run, one wins. Returns whether this call claimed it.
    """
    match = Run.owner.is_(None) if previous_owner is None else Run.owner == previous_owner
    claim = (
        update(Run)
        .where(Run.id == run_id, Run.status == status, match)
        .values(status="running", owner=owner, error=None, finished_at=None)
    )

    def write() -> bool:
        with session_scope(factory) as session:
            return cast(CursorResult[Any], session.execute(claim)).rowcount == 1

    return retry_busy(write)


def checkpoint_thread_id(run_id: int) -> str:
    """The LangGraph thread a graph run's checkpoints are saved under (in the trace store's database)."""
    return f"run-{run_id}"


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
