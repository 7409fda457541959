"""Keeping the trace store in shape: pruning old runs and reporting its size."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import session_scope
from storage.models import Base, Feedback, Run
from storage.runs import checkpoint_thread_id
from storage.urls import sqlite_path, store_name

CHECKPOINT_TABLES = ("checkpoints", "writes", "checkpoint_blobs", "checkpoint_writes")
"""LangGraph's checkpoint tables (SQLite saver: the first two; Postgres saver: all but ``writes``)."""


def prune(factory: sessionmaker[Session], older_than: datetime, *, keep_labelled: bool = False) -> int:
    """Delete runs created before ``older_than`` (their hops, feedback, rewards go with them).

    Running runs are never deleted; ``keep_labelled`` also keeps runs with a gold or correct label.
    Returns how many runs were deleted.
    """
    doomed = select(Run.id).where(Run.created_at < older_than, Run.status != "running")
    if keep_labelled:
        labelled = select(Feedback.run_id).where(Feedback.label.in_(("gold", "correct")))
        doomed = doomed.where(Run.id.not_in(labelled))
    with session_scope(factory) as session:
        ids = list(session.scalars(doomed))
        present = set(inspect(session.connection()).get_table_names())
        checkpoint_tables = [t for t in CHECKPOINT_TABLES if t in present]
        for start in range(0, len(ids), 500):
            # The children explicitly too: ON DELETE CASCADE needs SQLite's foreign_keys pragma.
            chunk = ids[start : start + 500]
            for table in ("hops", "feedback", "rewards"):
                model = Base.metadata.tables[table]
                session.execute(delete(model).where(model.c.run_id.in_(chunk)))
            session.execute(delete(Run).where(Run.id.in_(chunk)))
            threads = [checkpoint_thread_id(run_id) for run_id in chunk]
            for table in checkpoint_tables:  # an interrupted run's LangGraph checkpoints go with it
                session.execute(
                    text(f"DELETE FROM {table} WHERE thread_id IN :threads").bindparams(
                        bindparam("threads", expanding=True)
                    ),
                    {"threads": threads},
                )
    return len(ids)


def size_report(engine: Engine) -> dict[str, Any]:
    """Rows per table, and the database's size on disk in bytes (SQLite: file plus WAL; Postgres)."""
    with engine.connect() as connection:
        present = set(inspect(connection).get_table_names())
        rows = {
            name: int(connection.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in sorted(Base.metadata.tables.items())
            if name in present
        }
        path = sqlite_path(engine.url)
        size = 0
        if engine.dialect.name == "postgresql":
            size = int(connection.scalar(text("SELECT pg_database_size(current_database())")) or 0)
        elif path is not None:
            size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
        where = store_name(engine.url) if path is not None or engine.dialect.name != "sqlite" else ":memory:"
    return {"database": where, "dialect": engine.dialect.name, "bytes": size, "rows": rows}
