"""Database URLs as the trace store reads and shows them: parsed and checked once, shown with the password
hidden. Every message, log line or page that names a database goes through :func:`shown_url` (or
:func:`store_name`, which names a SQLite file by its path)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from storage.errors import StoreError

ACCEPTED = "sqlite:///PATH (a file), sqlite:// (in memory) or postgresql+psycopg://USER:PASSWORD@HOST/DB"
"""What a database URL may be, as errors tell the user (any SQLAlchemy dialect with its driver works)."""

# user:password@ after the scheme, up to the last @: a URL SQLAlchemy cannot parse still hides its password.
_CREDENTIALS = re.compile(r"^([A-Za-z][\w+.-]*://[^/:@]*:).*@")
SIDE_FILES = ("-wal", "-shm", "-journal")
"""SQLite's companions of a database file: its write-ahead log, shared memory and rollback journal."""


def shown_url(url: str | URL) -> str:
    """The URL as people may see it: the password replaced by ``***``, whether or not it parses."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return _CREDENTIALS.sub(r"\1***@", url)


def parse_url(url: str) -> URL:
    """The URL parsed, its dialect and driver importable; otherwise a one-line StoreError naming it."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"{shown_url(url)!r} is not a database URL; use {ACCEPTED}") from None
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise StoreError(
            f"database URL {shown_url(parsed)}: SQLAlchemy has no database dialect {parsed.drivername!r}; "
            f"use {ACCEPTED}"
        ) from None
    except ImportError as exc:  # the dialect exists, its driver package is missing (mysql+pymysql)
        raise StoreError(
            f"database URL {shown_url(parsed)}: its driver is not installed ({exc}); install it, or use "
            f"{ACCEPTED}"
        ) from None
    return parsed


def sqlite_path(url: URL) -> Path | None:
    """The file a SQLite URL names (a plain path or a ``file:`` URI); None for memory or another database."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") and url.query.get("uri") in ("true", "1"):
        if url.query.get("mode") == "memory":
            return None
        return Path(unquote(urlsplit(database).path)).expanduser()
    return Path(database).expanduser()


def store_files(url: str) -> list[Path]:
    """The files a SQLite store consists of (the database and its companions, present or not); [] else.

    What an export must never overwrite. An unparsable URL holds no files.
    """
    try:
        path = sqlite_path(make_url(url))
    except (ArgumentError, ValueError):
        return []
    if path is None:
        return []
    return [path, *(Path(f"{path}{suffix}") for suffix in SIDE_FILES)]


def store_name(url: URL) -> str:
    """The database as messages name it: the file for SQLite, the URL without its password otherwise."""
    path = sqlite_path(url)
    return str(path) if path is not None else shown_url(url)
