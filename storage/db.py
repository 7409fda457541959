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

from storage.models import Base, Hop, Run, utcnow

SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(RuntimeError):
    """The trace store cannot be opened or written; the message names the database."""


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables in place; SQLite gets WAL, a busy timeout and foreign keys."""
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        _check_sqlite_file(url)
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
    if path.exists():
        with path.open("rb") as handle:
            header = handle.read(16)
        if header and header != SQLITE_MAGIC:
            raise StoreError(f"{path} is not a SQLite database (set ROUTEGRAPH_DATABASE_URL elsewhere)")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)


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
    factory: sessionmaker[Session], run_id: int, *, status: str, answer: str | None, error: str | None
) -> None:
    with session_scope(factory) as session:
        run = session.get_one(Run, run_id)
        run.status, run.answer, run.error = status, answer, error
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
) -> Sequence[Run]:
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if graph:
        query = query.where(Run.graph == graph)
    if status:
        query = query.where(Run.status == status)
    if since:
        query = query.where(Run.created_at >= since)
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
        runs = session.scalars(select(Run).where(Run.status == "running", Run.owner.like(f"{host}:%"))).all()
        orphaned = [run for run in runs if not is_alive(int(str(run.owner).rsplit(":", 1)[1]))]
        for run in orphaned:
            run.status = "failed"
            run.error = run.error or "interrupted: the process running it stopped mid-run"
            run.finished_at = utcnow()
        return len(orphaned)
