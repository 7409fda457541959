"""Per-model circuit breakers: while a model's server is down, a call to it fails at once with when to try
again (:class:`ModelDownError`) instead of waiting for a refused connection or a timeout.

The supervisor (:mod:`app.pool.supervisor`) opens a model's circuit when its server dies or stops
answering, and closes it once a restart is healthy; the pool checks it before every live call. Between two
supervisor checks, a probe registered per model (its server process's exit status: one ``waitpid``, no I/O)
opens it the moment a call finds the process gone.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from graphs.ports import EndpointError


@dataclass(frozen=True)
class Outage:
    """Why a model is down and when it is expected back."""

    reason: str
    """What happened: 'killed by signal 9', 'not answering /health', 'gave up after 5 restarts …'."""
    back_at: float | None
    """``time.monotonic()`` by which a restart should be serving; None: no restart will be tried."""

    def retry_after_s(self, now: float | None = None) -> int | None:
        """Whole seconds a client should wait (at least 1), or None when waiting will not help."""
        if self.back_at is None:
            return None
        return max(1, math.ceil(self.back_at - (time.monotonic() if now is None else now)))

    def describe(self, now: float | None = None) -> str:
        wait = self.retry_after_s(now)
        if wait is None:
            return f"down and not restarting ({self.reason})"
        return f"down, restarting; retry in {wait} s ({self.reason})"


class ModelDownError(EndpointError):
    """A call refused because the model's circuit is open; ``retry_after_s`` is None when it stays down."""

    def __init__(self, model: str, outage: Outage) -> None:
        super().__init__(model, outage.describe())
        self.retry_after_s = outage.retry_after_s()

    @property
    def message(self) -> str:
        """For people: ``model X is down, restarting; retry in 3 s (killed by signal 9)``."""
        return f"model {self.model} is {self.reason}"


Probe = Callable[[], None]
"""Looks at a model's server now and opens its circuit if the server is gone."""


class Circuits:
    """The open circuits of one pool's models, shared by the event loop (checks) and the supervisor thread
    (opens and closes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, Outage] = {}
        self._probes: dict[str, Probe] = {}

    def watch(self, name: str, probe: Probe) -> None:
        with self._lock:
            self._probes[name.lower()] = probe

    def open(self, name: str, outage: Outage) -> None:
        with self._lock:
            self._open[name.lower()] = outage

    def close(self, name: str) -> None:
        with self._lock:
            self._open.pop(name.lower(), None)

    def outage(self, name: str) -> Outage | None:
        """The model's outage now (probing its server first), or None when its circuit is closed."""
        with self._lock:
            probe = self._probes.get(name.lower())
        if probe is not None:
            probe()
        with self._lock:
            return self._open.get(name.lower())

    def check(self, name: str) -> None:
        """Raise :class:`ModelDownError` while the model's circuit is open."""
        outage = self.outage(name)
        if outage is not None:
            raise ModelDownError(name, outage)
