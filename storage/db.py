"""Engines, sessions and the small query functions the rest of routegraph uses."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, selectinload, sessionmaker
from sqlalchemy.pool import StaticPool

from storage.models import FEEDBACK_LABELS, Base, Feedback, Hop, Reward, Run, TrainingRun, utcnow

SQLITE_MAGIC = b"SQLite format 3\x00"
T = TypeVar("T")


class StoreError(RuntimeError):
    """The trace store cannot be opened or written; the message names the database."""


def make_engine(url: str, *, upgrade: bool = True) -> Engine:
    """An engine for ``url`` with its schema migrated to the newest revision.

    SQLite gets WAL, a busy timeout, foreign keys and ``BEGIN IMMEDIATE`` for writes (``session_scope``),
    so concurrent writers queue on the busy timeout instead of failing with "database is locked".
    A database whose schema revision this code does not know (a newer routegraph migrated it) is refused.
    ``upgrade=False`` leaves the schema as it is (tests and tools that migrate by hand).
    """
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        _check_sqlite_file(url)
    if url in ("sqlite://", "sqlite:///:memory:"):
        # One shared connection, or each thread would see its own empty in-memory database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        try:
            engine = create_engine(url, connect_args={"timeout": 30} if is_sqlite else {})
        except ImportError as exc:  # e.g. postgresql+psycopg without psycopg installed
            raise StoreError(f"cannot open trace store {url}: {exc}") from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    try:
        if upgrade:
            upgrade_store(engine)
    except (DatabaseError, OperationalError) as exc:
        engine.dispose()
        raise StoreError(f"cannot open trace store {_name(engine)}: {exc.orig}") from None
    except StoreError:
        engine.dispose()
        raise
    return engine


def _name(engine: Engine) -> str:
    """The database as messages name it: the file for SQLite, the URL without its password otherwise."""
    if engine.dialect.name == "sqlite" and engine.url.database and engine.url.database != ":memory:":
        return str(Path(engine.url.database).expanduser())
    return engine.url.render_as_string(hide_password=True)


# -- schema migrations -------------------------------------------------------------------------------------
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 0x726F757465  # pg_advisory_xact_lock key: one migrator at a time per database


def alembic_config(engine: Engine | None = None, connection: Connection | None = None) -> Config:
    """Alembic's configuration built in code: the packaged migrations, no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        url = engine.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_store(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default the newest), in one locked transaction.

    A database made by ``create_all`` before migrations existed (no ``alembic_version``) is stamped with
    the revision its tables match, then upgraded; anything else unversioned is refused.
    """
    scripts = _scripts()
    head = head_revision()
    known = {script.revision for script in scripts.walk_revisions()}
    with _migration_connection(engine) as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        if current is not None and current not in known:
            raise StoreError(
                f"trace store {_name(engine)} is at schema revision {current}, which this routegraph does "
                f"not know (its newest is {head}): a newer routegraph migrated it; upgrade routegraph "
                "or point ROUTEGRAPH_DATABASE_URL at another database"
            )
        if current == head and revision == "head":
            return
        if current is None:
            baseline = _unversioned_baseline(engine, connection)
            if baseline is not None:
                MigrationContext.configure(connection).stamp(scripts, baseline)
        command.upgrade(alembic_config(engine, connection), revision)


def downgrade_store(engine: Engine, revision: str) -> None:
    """Take the database back to ``revision`` (``base`` drops every table); for tests and rollbacks."""
    with _migration_connection(engine) as connection:
        command.downgrade(alembic_config(engine, connection), revision)


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock; foreign keys off on SQLite.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock, so concurrent starters wait and then see the
    migrated schema; foreign keys are off meanwhile, or batch mode's table copy (``DROP TABLE runs``)
    would cascade-delete every hop. Postgres: a transaction-scoped advisory lock.
    """
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with connection.execution_options(routegraph_write=True).begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                    )
                yield connection
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def _unversioned_baseline(engine: Engine, connection: Connection) -> str | None:
    """The revision an unversioned database's tables match: None when it is empty."""
    from storage.migrations.versions.r0001_initial import INITIAL_TABLES

    inspector = inspect(connection)
    tables = set(inspector.get_table_names()) - {"alembic_version"}
    if not tables:
        return None
    run_columns = {column["name"] for column in inspector.get_columns("runs")} if "runs" in tables else set()
    if tables == set(INITIAL_TABLES) and "graph_version" not in run_columns:
        return "0001"
    if tables == set(Base.metadata.tables) and "options" in run_columns:
        return head_revision()
    if tables == set(Base.metadata.tables) and "graph_version" in run_columns:
        return "0002"
    raise StoreError(
        f"trace store {_name(engine)} has tables ({', '.join(sorted(tables))}) but no schema revision, and "
        "they match no routegraph schema; point ROUTEGRAPH_DATABASE_URL at another database"
    )


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
    # sqlite3 emits no BEGIN of its own (it would be a deferred one, and only before DML): _sqlite_begin does.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """Writers take SQLite's write lock up front (waiting on the busy timeout); readers begin deferred.

    A deferred transaction that reads and then writes cannot wait for the lock: SQLite answers
    "database is locked" at once when another writer committed meanwhile.
    """
    write = connection.get_execution_options().get("routegraph_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A write transaction (on SQLite ``BEGIN IMMEDIATE``), committed on leaving the block."""
    with factory() as session, session.begin():
        session.connection(execution_options={"routegraph_write": True})
        yield session


# -- writes ----------------------------------------------------------------------------------------------
_BUSY_RETRIES = 5


def _retry_busy(write: Callable[[], T]) -> T:
    """Run a write, retrying it when SQLite still reports the database busy after the busy timeout."""
    for attempt in range(_BUSY_RETRIES):
        try:
            return write()
        except OperationalError as exc:
            busy = "locked" in str(exc.orig) or "busy" in str(exc.orig)
            if not busy or attempt == _BUSY_RETRIES - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


@contextmanager
def write_connection(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A write transaction (on SQLite ``BEGIN IMMEDIATE``) on a plain connection, committed on leaving the
    block: for the writes every run makes, which need no ORM unit of work."""
    with _engine(factory).connect() as connection:
        connection = connection.execution_options(routegraph_write=True)
        with connection.begin():
            yield connection


def _engine(factory: sessionmaker[Session]) -> Engine:
    return cast(Engine, factory.kw["bind"])


def write_problem(factory: sessionmaker[Session]) -> str | None:
    """Why the store cannot take a write now, or None when it can (a readiness check).

    It runs an UPDATE that matches no row in a write transaction and rolls back: the database still checks
    the connection, the write lock (SQLite) and that writes are allowed (a read-only file or replica, a
    missing privilege), and nothing is left behind, not even a sequence value.
    """
    try:
        with _engine(factory).connect() as connection:
            connection = connection.execution_options(routegraph_write=True)
            with connection.begin() as transaction:
                connection.execute(update(_RUNS).where(_RUNS.c.id < 0).values(status=_RUNS.c.status))
                transaction.rollback()
    except DBAPIError as exc:
        return f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0]}"
    return None


_HOPS = Base.metadata.tables["hops"]
_RUNS = Base.metadata.tables["runs"]
_INSERT_RUN = insert(_RUNS).returning(_RUNS.c.id)
_RUN_CREATED_AT = select(_RUNS.c.created_at).where(_RUNS.c.id == bindparam("run"))


def create_run(factory: sessionmaker[Session], **fields: Any) -> int:
    def write() -> int:
        with write_connection(factory) as connection:
            return int(connection.execute(_INSERT_RUN, fields).scalar_one())

    return _retry_busy(write)


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

    _retry_busy(write)


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

    _retry_busy(write)


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

    return _retry_busy(write)


def checkpoint_thread_id(run_id: int) -> str:
    """The LangGraph thread a graph run's checkpoints are saved under (in the trace store's database)."""
    return f"run-{run_id}"


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


_GOLD_OF_RUN = (
    select(Feedback.id).where(Feedback.run_id == bindparam("run"), Feedback.label == "gold").limit(1)
)


def has_gold_answer(factory: sessionmaker[Session], run_id: int) -> bool:
    """Whether a run has gold feedback: one indexed lookup, asked for every run that finishes."""
    with _engine(factory).connect() as connection:
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


# -- rewards -----------------------------------------------------------------------------------------------
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
            labelled.append((run, list(feedback.gold_aliases or [feedback.gold_answer])))
        elif feedback.label == "correct" and run.answer:
            labelled.append((run, [run.answer]))
    return labelled
