"""Looking at a SQLite file before anything writes to it: what is there, whether this user may write it, and
a read-only engine to read it with.

SQLite changes a file as soon as a connection switches it to WAL (the header's format bytes and its change
counter), so :func:`storage.engine.make_engine` opens a file for writing only after these looks, and a
schema check on a read-only connection, say that it is empty or routegraph's own.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from sqlalchemy import Engine, create_engine

from storage.errors import StoreError

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100
FileState = Literal["missing", "empty", "database"]


def file_state(path: Path) -> FileState:
    """Nothing, an empty file, or a whole SQLite database; StoreError otherwise.

    SQLite itself reads the header, on a read-only connection: this process may already hold connections
    to the file, and closing any other descriptor of it would drop every POSIX lock the process holds on
    it (another process would then take itself for the last connection and delete the WAL this one still
    writes to). SQLite's own close keeps a descriptor open while its other connections hold locks.
    """
    try:
        if not path.exists():
            return "missing"
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        size = path.stat().st_size
    except OSError as exc:  # a directory at the path, no permission, a file where a folder should be
        raise StoreError(f"cannot open trace store {path}: {exc.strerror or exc}") from None
    if size == 0:
        return "empty"
    if size < HEADER_BYTES:  # SQLite would take a few stray bytes for an empty database
        damage = f"{size} bytes, shorter than SQLite's {HEADER_BYTES}-byte header"
        raise StoreError(
            f"{path} is not a SQLite database, or a damaged one ({damage}); set "
            "ROUTEGRAPH_DATABASE_URL elsewhere"
        )
    if not os.access(path, os.R_OK):
        raise StoreError(f"cannot open trace store {path}: Permission denied")
    try:
        connection = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
            pages = int(connection.execute("PRAGMA page_count").fetchone()[0])
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" not in str(exc):
            raise StoreError(f"cannot open trace store {path}: {exc}") from None
        raise StoreError(f"{path} is not a SQLite database (set ROUTEGRAPH_DATABASE_URL elsewhere)") from None
    # Pages still in a write-ahead log are not in the file yet.
    if pages and not Path(f"{path}-wal").exists() and size < pages * page_size:
        raise StoreError(
            f"{path} is a damaged SQLite database (the header says {pages * page_size} bytes, the file has "
            f"{size}: truncated?); restore it from a backup or set ROUTEGRAPH_DATABASE_URL elsewhere"
        )
    return "database"


def writable(path: Path) -> bool:
    """Whether this user may write the database and create its journal beside it (or, for a new file, the
    folders it goes in)."""
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(_existing_folder(path), os.W_OK)


def unwritable_part(path: Path) -> str:
    """Which of the file and its directory this user cannot write, for messages."""
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable by this user"
    return f"directory {_existing_folder(path)} is not writable by this user"


def _existing_folder(path: Path) -> Path:
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def make_parent(path: Path) -> None:
    """Create the folders a new database file goes in."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder should be, no permission
        raise StoreError(f"cannot create trace store {path}: {exc.strerror or exc}") from None


def read_only_uri(path: Path) -> str:
    """A SQLite URI that opens ``path`` without writing anything, not even a ``-wal`` or ``-shm`` beside it.

    ``immutable=1`` reads the file as it is and creates nothing: right when no write-ahead log or journal
    holds pages the file lacks, so no connection has the database open for writing (SQLite deletes the
    ``-wal`` when the last one closes); a writer that starts meanwhile writes to a new log, not to the file,
    until a checkpoint long after a read command is done. Otherwise ``mode=ro``, which reads through the
    log and takes part in SQLite's locking like any reader.
    """
    uri = f"file:{quote(str(path.resolve()))}"
    if any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-journal")):
        return f"{uri}?mode=ro"
    return f"{uri}?immutable=1"


def read_only_engine(path: Path) -> Engine:
    """An engine that can only read ``path``: no WAL switch, no journal, no migration, no writing pragma."""
    uri = read_only_uri(path)

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        connection.execute("PRAGMA query_only=ON")
        return connection

    # The URL names the file (messages, size reports); the creator is how it is opened.
    return create_engine(f"sqlite:///{path}", creator=connect)
