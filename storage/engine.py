"""The trace store's engine: opening a database (refusing what is not ours), SQLite's settings, sessions
and write transactions, and the Alembic migrations that bring a schema to the newest revision."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    create_engine,
    event,
    inspect,
    text,
    update,
)
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from storage import probe
from storage.errors import StoreError
from storage.models import Base
from storage.urls import parse_url, sqlite_path, store_name

T = TypeVar("T")


def make_engine(url: str, *, upgrade: bool = True, read_only: bool = False) -> Engine:
    """An engine for ``url`` with its schema migrated to the newest revision.

    Nothing is written to a SQLite file before it is known to be empty or routegraph's own: an existing
    file is first read on a read-only connection, and another application's database, a damaged file or
    one a newer routegraph migrated is refused as it was (:mod:`storage.probe`). Then SQLite gets WAL, a
    busy timeout, foreign keys and ``BEGIN IMMEDIATE`` for writes (``session_scope``), so concurrent
    writers queue on the busy timeout instead of failing with "database is locked".
    ``read_only``: only reads will follow; a store already at the newest revision is opened read-only (no
    WAL switch, no migration), so a file or directory this user cannot write can still be read.
    ``upgrade=False`` takes the database as it is (tests and tools that migrate by hand).
    An unusable URL is a StoreError naming it without its password.
    """
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is None:  # in memory, or a database server
        return _open(parsed, upgrade=upgrade)
    state = probe.file_state(path)
    revision = _revision_read_only(path) if state == "database" and upgrade else None
    if read_only and state == "database" and upgrade and revision == head_revision():
        return probe.read_only_engine(path)
    explicit_uri = str(parsed.database).startswith("file:")  # the user chose its open mode (mode=ro)
    if not explicit_uri and not probe.writable(path):
        raise StoreError(_unwritable(path, state, revision))
    if state == "missing":
        probe.make_parent(path)
    return _open(parsed if explicit_uri else parsed.set(database=str(path)), upgrade=upgrade)


def _open(url: URL, *, upgrade: bool) -> Engine:
    """The engine for reading and writing, SQLite's settings applied, the schema migrated (``upgrade``)."""
    is_sqlite = url.get_backend_name() == "sqlite"
    if is_sqlite and sqlite_path(url) is None:
        # One shared connection, or each thread would see its own empty in-memory database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        try:
            engine = create_engine(url, connect_args={"timeout": 30} if is_sqlite else {})
        except ImportError as exc:  # parse_url imported the driver; a dependency of it may still be missing
            raise StoreError(f"cannot open trace store {store_name(url)}: {exc}") from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    try:
        if upgrade:
            upgrade_store(engine)
    except (DatabaseError, OperationalError) as exc:
        engine.dispose()
        reason = " ".join(str(exc.orig).split())  # one line: drivers' messages may span several
        raise StoreError(f"cannot open trace store {_name(engine)}: {reason}") from None
    except StoreError:
        engine.dispose()
        raise
    return engine


def _revision_read_only(path: Path) -> str | None:
    """The schema revision of an existing SQLite file, read without writing; StoreError unless it is ours."""
    engine = probe.read_only_engine(path)
    try:
        with engine.connect() as connection:
            revision = check_ours(engine, connection)
    except OperationalError as exc:  # cannot be opened or locked: says nothing of its content
        raise StoreError(f"cannot read trace store {path}: {exc.orig}") from None
    except DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise StoreError(
            f"{path} is a damaged SQLite database ({exc.orig}); restore it from a backup or set "
            "ROUTEGRAPH_DATABASE_URL elsewhere"
        ) from None
    finally:
        engine.dispose()
    return revision


def _unwritable(path: Path, state: str, revision: str | None) -> str:
    why = probe.unwritable_part(path)
    if state == "missing":
        return f"cannot create trace store {path}: {why}"
    if revision is not None and revision != head_revision():
        return (
            f"trace store {path} is at schema revision {revision} and needs migrating to {head_revision()}, "
            f"but {why}: let its owner run any routegraph command once"
        )
    return (
        f"trace store {path} is read-only here ({why}), and this command writes to it; make it writable "
        "or set ROUTEGRAPH_DATABASE_URL to a copy"
    )


def _name(engine: Engine) -> str:
    """The database as messages name it: the file for SQLite, the URL without its password otherwise."""
    return store_name(engine.url)


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
    with _migration_connection(engine) as connection:
        current = check_ours(engine, connection)
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


def check_ours(engine: Engine, connection: Connection) -> str | None:
    """The database's schema revision (None: unversioned, empty or made by ``create_all``), or a StoreError
    when it is not a routegraph store this code can use: another application's tables, or a revision only a
    newer routegraph knows. Reads only."""
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        _unversioned_baseline(engine, connection)  # raises for tables that are not ours
        return None
    if current not in {script.revision for script in _scripts().walk_revisions()}:
        tables = set(inspect(connection).get_table_names())
        if "runs" not in tables or "hops" not in tables:
            raise StoreError(
                f"{_name(engine)} is not a routegraph trace store: it is at another application's schema "
                f"revision {current} (tables {', '.join(sorted(tables))}); set ROUTEGRAPH_DATABASE_URL "
                "to another database"
            )
        raise StoreError(
            f"trace store {_name(engine)} is at schema revision {current}, which this routegraph does "
            f"not know (its newest is {head_revision()}): a newer routegraph migrated it; upgrade "
            "routegraph or point ROUTEGRAPH_DATABASE_URL at another database"
        )
    return current


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
        f"{_name(engine)} is not a routegraph trace store: it has tables ({', '.join(sorted(tables))}) but "
        "no schema revision, and they match no routegraph schema; point ROUTEGRAPH_DATABASE_URL at another "
        "database"
    )


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


_BUSY_RETRIES = 5


def retry_busy(write: Callable[[], T]) -> T:
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
    with engine_of(factory).connect() as connection:
        connection = connection.execution_options(routegraph_write=True)
        with connection.begin():
            yield connection


def engine_of(factory: sessionmaker[Session]) -> Engine:
    return cast(Engine, factory.kw["bind"])


def write_problem(factory: sessionmaker[Session]) -> str | None:
    """Why the store cannot take a write now, or None when it can (a readiness check).

    It runs an UPDATE that matches no row in a write transaction and rolls back: the database still checks
    the connection, the write lock (SQLite) and that writes are allowed (a read-only file or replica, a
    missing privilege), and nothing is left behind, not even a sequence value.
    """
    runs = Base.metadata.tables["runs"]
    try:
        with engine_of(factory).connect() as connection:
            connection = connection.execution_options(routegraph_write=True)
            with connection.begin() as transaction:
                connection.execute(update(runs).where(runs.c.id < 0).values(status=runs.c.status))
                transaction.rollback()
    except DBAPIError as exc:
        return f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0]}"
    return None
