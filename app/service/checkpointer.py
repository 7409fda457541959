"""LangGraph checkpoints of graph runs, kept in the trace store's own database.

Every graph run is a LangGraph thread, ``run-<run id>`` (:func:`storage.db.checkpoint_thread_id`), saved
after each super-step, so an interrupted run resumes from its last completed step:

* SQLite file: the same file as the traces (LangGraph's ``checkpoints`` and ``writes`` tables), through
  LangGraph's ``SqliteSaver`` on one connection per service, its statements run inline on the event loop
  (:class:`InlineSqliteSaver`);
* PostgreSQL: the same database (``checkpoints``, ``checkpoint_blobs``, ``checkpoint_writes``), through
  ``AsyncPostgresSaver`` with the store's URL as a psycopg conninfo;
* in-memory SQLite (tests) or another database: an ``InMemorySaver`` living as long as the service, so
  resuming works within the process only.

The service's runs come from several event loops (its own loop thread, the server's, an evaluation's
``asyncio.run``): the SQLite saver's connection is shared by all of them (``SqliteSaver`` locks it), and a
PostgreSQL saver, whose async connection belongs to one loop, is opened per run (:meth:`Checkpoints.open`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from sqlalchemy.engine import make_url

from app.service.registry import REGISTRY
from graphs.hops import Hop

SQLITE_TIMEOUT_S = 30.0
"""Busy timeout of the saver's SQLite connection, as the trace store's own (``storage.db``)."""


def state_types() -> tuple[type, ...]:
    """Our classes inside graph states: the only ones a checkpoint may deserialise (LangGraph's allowlist)."""
    return (Hop, *(t for spec in REGISTRY.values() for t in spec.state_types()))


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=[(t.__module__, t.__name__) for t in state_types()])


def postgres_conninfo(database_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL (``postgresql+psycopg://…``) as the libpq URI psycopg connects with."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class InlineSqliteSaver(SqliteSaver):
    """LangGraph's ``SqliteSaver`` with async methods that run its synchronous ones inline.

    Why not ``AsyncSqliteSaver``: it sends every statement, cursor and commit to aiosqlite's thread and
    waits for the answer, three or four round trips per save, each costing more than the sub-millisecond
    insert itself (a 3-hop run saves 13 times: ~15 ms of a 20 ms run on instant models). Inline, a save
    blocks the loop for its insert and commit only, as the trace store's own hop writes do. Each method
    commits before it returns, so no transaction stays open across an ``await``.
    """

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)


class Checkpoints:
    """Where graph runs' checkpoints live: derived from the trace store's URL, nothing else to configure."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.serde = serializer()
        self._memory: InMemorySaver | None = None
        self._sqlite_path: str | None = None
        self._postgres: str | None = None
        self._postgres_ready = False
        self._sqlite: InlineSqliteSaver | None = None
        self._sqlite_lock = threading.Lock()
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
        """The saver for one run: the service's own (SQLite, memory) or one on the running event loop,
        closed when the run ends (PostgreSQL)."""
        if self._memory is not None:
            yield self._memory
        elif self._sqlite_path is not None:
            yield self._sqlite_saver()
        else:
            assert self._postgres is not None
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            async with AsyncPostgresSaver.from_conn_string(self._postgres, serde=self.serde) as saver:
                if not self._postgres_ready:
                    await saver.setup()  # creates or migrates LangGraph's tables; idempotent
                    self._postgres_ready = True
                yield saver

    def _sqlite_saver(self) -> InlineSqliteSaver:
        """The service's SQLite saver, connected (and its tables created) on first use."""
        with self._sqlite_lock:
            if self._sqlite is None:
                assert self._sqlite_path is not None
                connection = sqlite3.connect(
                    self._sqlite_path,
                    timeout=SQLITE_TIMEOUT_S,
                    check_same_thread=False,  # SqliteSaver serialises its use with a lock
                    uri=self._sqlite_path.startswith("file:"),
                )
                # The store runs the file in WAL mode; NORMAL (as the store's own connections) commits
                # without an fsync, which a save after every step would otherwise pay.
                connection.execute("PRAGMA synchronous=NORMAL")
                saver = InlineSqliteSaver(connection, serde=self.serde)
                saver.setup()
                self._sqlite = saver
            return self._sqlite

    def close(self) -> None:
        """Close the SQLite saver's connection (a later run opens a new one)."""
        with self._sqlite_lock:
            if self._sqlite is not None:
                self._sqlite.conn.close()
                self._sqlite = None

    async def exists(self, thread_id: str) -> bool:
        """Whether LangGraph thread ``thread_id`` has a checkpoint."""
        async with self.open() as saver:
            return await saver.aget_tuple(thread_config(thread_id)) is not None  # type: ignore[arg-type]


def thread_config(thread_id: str, **config: Any) -> dict[str, Any]:
    """A LangGraph run config for ``thread_id`` (plus ``recursion_limit`` and the like)."""
    return {**config, "configurable": {"thread_id": thread_id}}
