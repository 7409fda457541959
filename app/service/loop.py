"""A background event loop thread on which synchronous callers run the service's coroutines, so HTTP clients
are reused across calls and several threads (Streamlit sessions) can stream at once."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running forever on a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._running()).result()

    def iterate(self, agen: AsyncGenerator[T, None]) -> Iterator[T]:
        """Iterate an async generator on the loop.

        The generator runs ahead of the reader, its items queued: a run never waits for the thread that
        reads its hops (a page rendering them, a terminal printing them), and a hop costs no round trip
        between the threads. Closing the iterator early cancels the generator on the loop and returns once
        it has finished (a run stopped this way is stored as cancelled before the close returns).
        """
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        finished = threading.Event()

        async def pump() -> None:
            try:
                async for item in agen:
                    items.put(item)
                items.put(_End())
            except Exception as exc:  # raised to the reader, not left on the task
                items.put(_End(exc))
            except BaseException as exc:  # cancelled (its reader is gone) or the interpreter is stopping
                items.put(_End(exc))
                raise

        async def start() -> asyncio.Task[None]:
            task = asyncio.create_task(pump())
            # Set even when the task is cancelled before it ever ran (its body's finally would not be).
            task.add_done_callback(lambda _: finished.set())
            return task

        loop = self._running()
        task = asyncio.run_coroutine_threadsafe(start(), loop).result()
        try:
            while not isinstance(item := items.get(), _End):
                yield item
            if item.error is not None:
                raise item.error
        finally:
            if not finished.is_set():
                loop.call_soon_threadsafe(task.cancel)  # raised in the generator, at whatever it awaits
                finished.wait()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="routegraph-loop", daemon=True).start()
            return self._loop


@dataclass
class _End:
    """The end of an iterated generator, and the exception it ended with, if any."""

    error: BaseException | None = None
