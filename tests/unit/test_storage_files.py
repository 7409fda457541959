"""The SQLite trace store's file: WAL and foreign keys, reopening, refusing what is not a store, creating
what is missing, and keeping another connection's locks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from storage import db
from storage.models import Hop
from tests.unit.test_storage import file_url, new_run


def pragma(engine: Engine, name: str) -> Any:
    with engine.connect() as connection:
        return connection.exec_driver_sql(f"PRAGMA {name}").scalar()


ORPHAN_HOP = text(
    'INSERT INTO hops (run_id, "index", node, input_tokens, output_tokens, cost, latency_s) '
    "VALUES (999, 0, 'think', 0, 0, 0, 0)"
)


def test_file_database_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = db.make_engine(file_url(tmp_path))
    try:
        assert str(pragma(engine, "journal_mode")).lower() == "wal"
        assert pragma(engine, "foreign_keys") == 1
        assert pragma(engine, "busy_timeout") == 30000
        factory = db.session_factory(engine)
        run_id = new_run(factory)
        db.add_hop(factory, run_id, 0, node="think")
        # Foreign keys are enforced: deleting a run deletes its hops (ON DELETE CASCADE) ...
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM runs WHERE id = :id"), {"id": run_id})
        with factory() as session:
            assert session.query(Hop).count() == 0
        # ... and a hop cannot point at a run that does not exist.
        with pytest.raises(IntegrityError, match="FOREIGN KEY"), engine.begin() as connection:
            connection.execute(ORPHAN_HOP)
    finally:
        engine.dispose()
    assert (tmp_path / "traces.db").is_file()


def test_reopening_a_store_keeps_its_runs(tmp_path: Path) -> None:
    url = file_url(tmp_path)
    first = db.make_engine(url)
    run_id = new_run(db.session_factory(first))
    first.dispose()
    second = db.make_engine(url)
    try:
        run = db.get_run(db.session_factory(second), run_id)
        assert run is not None and run.question == "What is the capital of France?"
    finally:
        second.dispose()


@pytest.mark.parametrize(
    "content",
    [
        b"routegraph notes\nthis is a text file, not a database\n",
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        db.SQLITE_MAGIC + b"\xff" * 4096,  # right header, corrupt body
    ],
    ids=["text", "binary", "corrupt-sqlite"],
)
def test_non_database_file_is_refused_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "traces.db"
    path.write_bytes(content)
    with pytest.raises(db.StoreError) as caught:
        db.make_engine(f"sqlite:///{path}")
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces.db"]  # no -wal / -shm / journal left


def test_empty_file_becomes_a_database(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    path.touch()
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        assert db.get_run(db.session_factory(engine), 1) is None
    finally:
        engine.dispose()
    assert path.read_bytes().startswith(db.SQLITE_MAGIC)


def test_missing_parent_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "traces.db"
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        run_id = new_run(db.session_factory(engine))
        assert run_id == 1
    finally:
        engine.dispose()
    assert path.is_file()


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    directory = tmp_path / "traces.db"
    directory.mkdir()  # a directory where the database file should be
    with pytest.raises(db.StoreError) as caught:
        db.make_engine(f"sqlite:///{directory}")
    assert str(directory) in str(caught.value)


def test_opening_a_store_again_keeps_the_locks_of_its_open_connections(tmp_path: Path) -> None:
    """SQLite's POSIX locks belong to the process: closing any other descriptor of the database file drops
    them all. A second engine on the same file (the learning loop opens several) must not do that, or
    another process that reads the store and closes takes itself for the last connection, checkpoints and
    deletes the WAL that this process goes on writing to: the store ends up corrupt."""
    url = file_url(tmp_path)
    first = db.make_engine(url)
    new_run(db.session_factory(first))  # a pooled connection stays open, holding its shared lock
    second = db.make_engine(url)
    try:
        reader = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('select count(*) from runs'); c.close()"
        )
        subprocess.run([sys.executable, "-c", reader, str(tmp_path / "traces.db")], check=True, timeout=60)
        # Another process's connection closed; ours are open, so the WAL must still be there.
        assert (tmp_path / "traces.db-wal").exists()
        run_id = new_run(db.session_factory(first))
        assert db.get_run(db.session_factory(second), run_id) is not None
    finally:
        first.dispose()
        second.dispose()
    check = (
        "import sqlite3, sys; "
        "print(sqlite3.connect(sys.argv[1]).execute('pragma integrity_check').fetchone()[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", check, str(tmp_path / "traces.db")], capture_output=True, text=True
    )
    assert done.stdout.strip() == "ok"
