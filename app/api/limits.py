"""Admission control: at most ``running`` requests run at once, up to ``queued`` more wait their turn (in
arrival order), and one beyond that is refused at once with 429 and a ``Retry-After`` estimated from how
long recent runs took. Waiting here, rather than inside a model server, costs no model timeout."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from app.api.errors import ApiError

Release = Callable[[], None]
SMOOTHING = 0.2
"""Weight of the newest run in the moving mean of run durations."""


class Limiter:
    def __init__(self, running: int, queued: int) -> None:
        self.running, self.queued = running, queued
        self._semaphore = asyncio.Semaphore(running)
        self._inside = 0  # running + waiting
        self._mean_run_s: float | None = None

    @property
    def waiting(self) -> int:
        return max(self._inside - self.running, 0)

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free for a new request: the queue ahead of it, drained
        ``running`` at a time at the mean run's pace (1 s before any run has finished)."""
        mean = self._mean_run_s if self._mean_run_s is not None else 1.0
        return max(1, math.ceil(mean * (self.waiting + 1) / self.running))

    async def acquire(self) -> Release:
        """Wait for a slot (429 when the queue is full); call the returned function once done with it
        (calling it again does nothing, so a stream may release in more than one place)."""
        if self._inside >= self.running + self.queued:
            wait = self.retry_after_s()
            raise ApiError(
                429,
                f"server busy: {self.running} requests running and {self.waiting} waiting; retry in {wait} s",
                "rate_limit_error",
                "busy",
                retry_after_s=wait,
            )
        self._inside += 1
        try:
            await self._semaphore.acquire()
        except BaseException:  # cancelled while waiting: the place in the queue is given up
            self._inside -= 1
            raise
        started, released = time.monotonic(), False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._inside -= 1
            self._semaphore.release()
            took = time.monotonic() - started
            previous = self._mean_run_s
            self._mean_run_s = took if previous is None else (1 - SMOOTHING) * previous + SMOOTHING * took

        return release
