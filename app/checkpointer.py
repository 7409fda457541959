"""LangGraph checkpoints of graph runs, kept in the trace store's own database.

Every graph run is a LangGraph thread, ``run-<run id>`` (:func:`storage.db.checkpoint_thread_id`), saved
after each super-step, so an interrupted run resumes from its last completed step:

* SQLite file: the same file as the traces (LangGraph's ``checkpoints`` and ``writes`` tables), through
  ``AsyncSqliteSaver`` on a connection opened for the run;
* PostgreSQL: the same database (``checkpoints``, ``checkpoint_blobs``, ``checkpoint_writes``), through
  ``AsyncPostgresSaver`` with the store's URL as a psycopg conninfo;
* in-memory SQLite (tests) or another database: an ``InMemorySaver`` living as long as the service, so
  resuming works within the process only.

A saver is opened per run (:meth:`Checkpoints.open`): async connections belong to one event loop, and the
service's runs come from several (its own loop thread, the server's, an evaluation's ``asyncio.run``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from sqlalchemy.engine import make_url

from graphs.hops import Hop
from graphs.r2_reasoner.prompts import Subtask
from graphs.r2_reasoner.state import SubtaskResult
from graphs.router_r1.prompts import Action

STATE_TYPES: tuple[type, ...] = (Hop, Action, Subtask, SubtaskResult)
"""Our classes inside graph states: the only ones a checkpoint may deserialise (LangGraph's allowlist)."""
SQLITE_TIMEOUT_S = 30.0
"""Busy timeout of the saver's SQLite connection, as the trace store's own (``storage.db``)."""


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=[(t.__module__, t.__name__) for t in STATE_TYPES])


def postgres_conninfo(database_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL (``postgresql+psycopg://…``) as the libpq URI psycopg connects with."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Checkpoints:
    """Where graph runs' checkpoints live: derived from the trace store's URL, nothing else to configure."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.serde = serializer()
        self._memory: InMemorySaver | None = None
        self._sqlite_path: str | None = None
        self._postgres: str | None = None
        self._postgres_ready = False
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            database = str(url.database)
            self._sqlite_path = database if database.startswith("file:") else str(Path(database).expanduser())
        elif url.get_backend_name() == "postgresql":
            self._postgres = postgres_conninfo(database_url)
        else:
            self._memory = InMemorySaver(serde=self.serde)

    @property
    def durable(self) -> bool:
        """Whether checkpoints outlive this process (so another process can resume the run)."""
        return self._memory is None

    @asynccontextmanager
    async def open(self) -> AsyncIterator[BaseCheckpointSaver[Any]]:
        """A saver for one run, on the running event loop; closed when the run ends."""
        if self._memory is not None:
            yield self._memory
        elif self._sqlite_path is not None:
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            # Autocommit (isolation_level None): each statement commits on the connection's own thread.
            # In sqlite3's default mode a transaction would stay open across the saver's awaits, holding
            # the write lock while the event loop runs the service's synchronous store writes, which
            # would then wait for it: a deadlock until the busy timeout.
            async with aiosqlite.connect(
                self._sqlite_path,
                timeout=SQLITE_TIMEOUT_S,
                isolation_level=None,
                uri=self._sqlite_path.startswith("file:"),
            ) as connection:
                # The store runs the file in WAL mode; NORMAL (as the store's own connections) commits
                # without an fsync per statement, which autocommit would otherwise pay several times a step.
                await connection.execute("PRAGMA synchronous=NORMAL")
                yield AsyncSqliteSaver(connection, serde=self.serde)
        else:
            assert self._postgres is not None
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            async with AsyncPostgresSaver.from_conn_string(self._postgres, serde=self.serde) as saver:
                if not self._postgres_ready:
                    await saver.setup()  # creates or migrates LangGraph's tables; idempotent
                    self._postgres_ready = True
                yield saver

    async def exists(self, thread_id: str) -> bool:
        """Whether LangGraph thread ``thread_id`` has a checkpoint."""
        async with self.open() as saver:
            return await saver.aget_tuple(thread_config(thread_id)) is not None  # type: ignore[arg-type]


def thread_config(thread_id: str, **config: Any) -> dict[str, Any]:
    """A LangGraph run config for ``thread_id`` (plus ``recursion_limit`` and the like)."""
    return {**config, "configurable": {"thread_id": thread_id}}
