"""Supervised embedded servers: a watcher thread health-checks each child (its process, then ``/health``),
reaps one that died, and restarts it with exponential backoff, re-binding its endpoint in every pool that
uses it; while it is down its models' circuits are open (:mod:`app.pool.circuit`).

A server that keeps dying is given up on after ``max_restarts`` restarts in ``window_s``: its circuit stays
open, saying so, and its log names why. One thread watches every server; a restart blocks the others'
checks for as long as the model takes to load, but a dead process is still noticed at once by the probe a
call makes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from app.pool.circuit import Outage

if TYPE_CHECKING:
    from app.pool.local_servers import LocalServer
    from app.pool.pool import Pool

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
"""Seconds between two rounds of checks: a process poll and one GET /health per server."""
HEALTH_TIMEOUT_S = 5.0
HUNG_AFTER = 6
"""Failed /health checks in a row (half a minute without an answer, at the timeout) after which a live but
silent server is killed and restarted. A busy llama.cpp answers /health from its HTTP threads even on a
loaded machine, so this is a hang, not load: killing a slow server would lose every request it holds."""
MAX_BACKOFF_S = 60.0
RESTART_WINDOW_S = 600.0


@dataclass
class _Watch:
    server: LocalServer
    start_timeout_s: float
    bindings: list[tuple[Pool, str]] = field(default_factory=list)
    """(pool, entry name) pairs served by this server: whose circuits open and endpoints re-bind."""
    failed_checks: int = 0
    restarts: deque[float] = field(default_factory=deque)
    """``time.monotonic()`` of each restart attempt within the window."""
    outage: Outage | None = None
    cause: str = ""
    """What took the server down (kept across failed restarts)."""
    restart_failed: bool = False
    """The last restart failed: the next one takes a new port, in case the old one was the trouble."""
    next_attempt: float = 0.0


class Supervisor:
    """Watches local servers from one daemon thread; ``stop`` before stopping the servers themselves."""

    def __init__(
        self,
        *,
        backoff_s: float = 1.0,
        max_restarts: int = 5,
        window_s: float = RESTART_WINDOW_S,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.backoff_s, self.max_restarts, self.window_s = backoff_s, max_restarts, window_s
        self.interval_s = interval_s
        self._watches: dict[int, _Watch] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One client for every check: a new one each second would rebuild its TLS context every time.
        self._http = httpx.Client(timeout=HEALTH_TIMEOUT_S)

    def watch(self, server: LocalServer, pool: Pool, name: str, start_timeout_s: float) -> None:
        """Supervise ``server`` for the pool entry ``name`` (the thread starts with the first watch)."""
        with self._lock:
            watched = self._watches.setdefault(id(server), _Watch(server, start_timeout_s))
            if (pool, name) not in watched.bindings:
                watched.bindings.append((pool, name))
        pool.circuits.watch(name, lambda: self._probe(watched))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="routegraph-supervisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching (a restart under way is aborted): nothing is restarted after this returns."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # the watcher must outlive any one failed check
                log.exception("supervisor check failed")

    def tick(self) -> None:
        """One round: check every server, restart those whose backoff has passed."""
        with self._lock:
            watches = list(self._watches.values())
        for watched in watches:
            if self._stop.is_set():
                return
            if watched.outage is None:
                self._check(watched)
            outage = watched.outage
            if outage is not None and outage.back_at is not None and time.monotonic() >= watched.next_attempt:
                self._restart(watched)

    def _probe(self, watched: _Watch) -> None:
        """Called before a model call: a dead process opens the circuits now, not at the next round."""
        if watched.outage is None and not self._stop.is_set():
            reason = watched.server.exit_reason()
            if reason is not None:
                self._down(watched, reason)

    def _check(self, watched: _Watch) -> None:
        reason = watched.server.exit_reason()  # poll() reaps a dead child: no zombie is left behind
        if reason is None:
            root = watched.server.base_url.removesuffix("/v1")
            try:
                healthy = self._http.get(f"{root}/health").status_code == 200
            except httpx.HTTPError:
                healthy = False
            watched.failed_checks = 0 if healthy else watched.failed_checks + 1
            if watched.failed_checks < HUNG_AFTER:
                return
            watched.server.kill()
            reason = f"not answering /health ({HUNG_AFTER} checks in a row); killed"
        self._down(watched, reason)

    def _down(self, watched: _Watch, reason: str, *, again: bool = False) -> None:
        """Open the server's circuits and schedule its restart (``again``: after a failed restart)."""
        with self._lock:
            if watched.outage is not None and not again:
                return
            if not again:
                watched.cause = reason
            now = time.monotonic()
            while watched.restarts and now - watched.restarts[0] > self.window_s:
                watched.restarts.popleft()
            if len(watched.restarts) >= self.max_restarts:
                log_path = watched.server.log_path
                outage = Outage(
                    f"{reason}; gave up after {len(watched.restarts)} restarts in {self.window_s / 60:.0f} "
                    f"min: see {log_path} and restart routegraph",
                    None,
                )
                log.error("%s server %s", watched.server.label, outage.reason)
            else:
                delay = min(self.backoff_s * 2 ** len(watched.restarts), MAX_BACKOFF_S)
                watched.next_attempt = now + delay
                expected = watched.server.started_in_s or 5.0
                outage = Outage(reason, watched.next_attempt + expected)
                log.warning(
                    "%s server on port %s %s; restarting in %.1f s (restart %d of %d in %.0f min)",
                    watched.server.label,
                    watched.server.port,
                    reason,
                    delay,
                    len(watched.restarts) + 1,
                    self.max_restarts,
                    self.window_s / 60,
                )
            self._set(watched, outage)

    def _restart(self, watched: _Watch) -> None:
        server = watched.server
        watched.restarts.append(time.monotonic())
        try:
            server.restart(watched.start_timeout_s, abort=self._stop, new_port=watched.restart_failed)
        except Exception as exc:  # a failed start is one more outage, with a longer backoff
            if not self._stop.is_set():
                watched.restart_failed = True
                self._down(watched, f"{watched.cause}; restart failed: {exc}", again=True)
            return
        watched.failed_checks, watched.restart_failed = 0, False
        for pool, name in watched.bindings:
            pool.bind_endpoint(name, server.base_url)  # the port may have changed
        self._set(watched, None)
        log.warning(
            "%s server restarted on port %s in %.1f s", server.label, server.port, server.started_in_s
        )

    def _set(self, watched: _Watch, outage: Outage | None) -> None:
        watched.outage = outage
        for pool, name in watched.bindings:
            if outage is None:
                pool.circuits.close(name)
            else:
                pool.circuits.open(name, outage)
