"""What the trace store refuses before it writes: another application's SQLite file, a corrupt one, one from a
newer routegraph (all left byte for byte as they were), database URLs it cannot use (named with the password
hidden), and a read-only store, which read commands still list."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner, Result

from app import cli
from app.cli import common
from app.config import DEFAULT_POOL, PROJECT_ROOT
from storage import db
from storage.models import Base


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rich wraps at 80 columns off a terminal: widen so that a message's words stay on its line.
    monkeypatch.setattr(common.console, "width", 400)
    monkeypatch.setattr(common.err_console, "width", 400)
    monkeypatch.setenv("ROUTEGRAPH_POOL_FILE", str(DEFAULT_POOL))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


def snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    """The file's bytes, its mtime and what lies beside it: all a refusal must leave as it was."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


def foreign_database(path: Path, journal_mode: str = "delete") -> Path:
    """Another application's SQLite file: its own tables and rows, in its own journal mode."""
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connection.execute("CREATE TABLE inventory (id INTEGER PRIMARY KEY, item TEXT)")
    connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    connection.executemany("INSERT INTO inventory (item) VALUES (?)", [("lamp",), ("desk",)])
    connection.commit()
    connection.close()
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # an mtime a write would move
    return path


def newer_schema_database(path: Path) -> Path:
    """routegraph's tables at a revision this code does not know, as a plain (rollback-journal) file."""
    engine = db.make_engine(f"sqlite:///{path}", upgrade=False)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('9999_future')"))
    engine.dispose()
    sqlite3.connect(path).execute("PRAGMA journal_mode=DELETE").connection.close()
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return path


def truncated_database(path: Path) -> Path:
    """A routegraph store cut short: the header is right, the pages it points to are gone."""
    engine = db.make_engine(f"sqlite:///{path}")
    factory = db.session_factory(engine)
    for n in range(50):
        db.create_run(factory, question=f"question {n} " + "x" * 500, graph="router-r1")
    engine.dispose()
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 3])
    return path


KINDS = {
    "foreign": foreign_database,
    "foreign-wal": lambda path: foreign_database(path, "wal"),
    "newer-schema": newer_schema_database,
    "truncated": truncated_database,
}


# -- nothing is written before the file is known to be ours -------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_refused_database_is_left_byte_for_byte(tmp_path: Path, kind: str) -> None:
    path = KINDS[kind](tmp_path / "theirs.db")
    before = snapshot(path)
    with pytest.raises(db.StoreError) as caught:
        db.make_engine(f"sqlite:///{path}")
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert snapshot(path) == before


def test_a_foreign_database_is_named_with_its_tables(tmp_path: Path) -> None:
    path = foreign_database(tmp_path / "theirs.db")
    with pytest.raises(db.StoreError, match=r"not a routegraph trace store.*customers, inventory"):
        db.make_engine(f"sqlite:///{path}")


def test_a_newer_schema_is_refused_as_such(tmp_path: Path) -> None:
    path = newer_schema_database(tmp_path / "newer.db")
    with pytest.raises(db.StoreError, match=r"9999_future.*newer routegraph"):
        db.make_engine(f"sqlite:///{path}")


@pytest.mark.parametrize("args", [("traces", "list"), ("traces", "prune", "--older-than", "1d")])
def test_cli_refuses_a_foreign_database_without_touching_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    path = foreign_database(tmp_path / "theirs.db")
    monkeypatch.setenv("ROUTEGRAPH_DATABASE_URL", f"sqlite:///{path}")
    before = snapshot(path)
    result = invoke(*args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(path) in result.output
    assert snapshot(path) == before


# -- database URLs -------------------------------------------------------------------------------------------
def test_shown_url_hides_every_password() -> None:
    assert db.shown_url("mysql+pymysql://admin:S3cr3tPass@host/db") == "mysql+pymysql://admin:***@host/db"
    assert db.shown_url("postgresql+psycopg://u:p%40ss@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"
    # Even a URL SQLAlchemy cannot parse (a port that is not a number) keeps its password hidden.
    assert db.shown_url("mysql://admin:S3cr3t@host:port/db") == "mysql://admin:***@host:port/db"
    assert db.shown_url("not a url") == "not a url"


@pytest.mark.parametrize(
    ("url", "shown", "reason"),
    [
        ("mysql+pymysql://admin:S3cr3tPass@host/db", "mysql+pymysql://admin:***@host/db", "not installed"),
        ("foo://bar", "foo://bar", "no database dialect"),
        ("mongodb://admin:S3cr3tPass@host/db", "mongodb://admin:***@host/db", "no database dialect"),
        ("postgresql+nodriver://u:S3cr3tPass@h/d", "postgresql+nodriver://u:***@h/d", "no database dialect"),
        ("not a url", "not a url", "not a database URL"),
        ("mysql://admin:S3cr3tPass@host:port/db", "mysql://admin:***@host:port/db", "not a database URL"),
    ],
)
def test_an_unusable_url_is_one_line_naming_it_without_its_password(
    url: str, shown: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(db.StoreError) as caught:
        db.make_engine(url)
    message = str(caught.value)
    assert shown in message and reason in message and "sqlite:///" in message  # what is accepted
    assert "S3cr3tPass" not in message and "\n" not in message

    monkeypatch.setenv("ROUTEGRAPH_DATABASE_URL", url)
    result = invoke("traces", "list")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "S3cr3tPass" not in result.output
    assert shown in result.output


# -- a store nobody may write: read commands still work ------------------------------------------------------
@pytest.fixture
def read_only_store() -> Iterator[Path]:
    """A valid store with one run, in a directory (and file) this user cannot write.

    Permissions do not bind root, so the commands then run as ``nobody`` (see :func:`invoke_unprivileged`);
    the directory is made under /tmp rather than pytest's tmp_path, which only its owner may enter.
    """
    base = Path(tempfile.mkdtemp(prefix="routegraph-ro-"))
    base.chmod(0o755)
    directory = base / "data"
    directory.mkdir()
    path = directory / "traces.db"
    engine = db.make_engine(f"sqlite:///{path}")
    factory = db.session_factory(engine)
    run_id = db.create_run(factory, question="What is the capital of France?", graph="router-r1")
    db.finish_run(factory, run_id, status="ok", answer="Paris", error=None)
    engine.dispose()
    path.chmod(0o444)
    directory.chmod(0o555)
    try:
        yield path
    finally:
        directory.chmod(0o755)
        shutil.rmtree(base)


def invoke_unprivileged(database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process, as ``nobody`` when the tests run as root."""
    env = {**os.environ, "ROUTEGRAPH_DATABASE_URL": f"sqlite:///{database}", "COLUMNS": "300"}
    env["ROUTEGRAPH_POOL_FILE"] = str(DEFAULT_POOL)
    env["ROUTEGRAPH_DATA_DIR"] = str(database.parent)
    command = [sys.executable, "-m", "app.cli", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop the permissions this test needs")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_read_commands_work_on_a_read_only_store(read_only_store: Path) -> None:
    before = snapshot(read_only_store)
    for args in (("traces", "list"), ("traces", "show", "1"), ("traces", "size", "--json")):
        result = invoke_unprivileged(read_only_store, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
    listed = invoke_unprivileged(read_only_store, "traces", "list")
    assert "capital of France" in listed.stdout
    assert snapshot(read_only_store) == before


def test_a_write_command_on_a_read_only_store_says_so(read_only_store: Path) -> None:
    result = invoke_unprivileged(read_only_store, "traces", "prune", "--older-than", "1d")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(read_only_store) in result.stderr and "not writable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_valid_store_can_be_read_without_being_written(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.create_run(db.session_factory(engine), question="q", graph="router-r1")
    engine.dispose()
    before = snapshot(path)
    reader = db.make_engine(f"sqlite:///{path}", read_only=True)
    try:
        assert [run.question for run in db.list_runs(db.session_factory(reader))] == ["q"]
    finally:
        reader.dispose()
    assert snapshot(path) == before
