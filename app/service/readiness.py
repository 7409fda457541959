"""Whether the service can answer now: no model down, each pool endpoint reachable and the trace store
writable (what ``GET /ready`` reports)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.pool import ModelEntry, Pool
from storage import db


@dataclass(frozen=True)
class Readiness:
    """Whether the service can answer now: each pool endpoint reachable, the trace store writable."""

    endpoints: dict[str, bool]
    """Pool entry (router included) → its endpoint answered. Recorded-outcome entries have none."""
    database: str | None
    """Why the trace store cannot take a write, or None."""
    down: dict[str, str] = field(default_factory=dict)
    """Entry → why its circuit is open ('down, restarting; retry in 3 s (killed by signal 9)')."""

    @property
    def ready(self) -> bool:
        return self.database is None and all(self.endpoints.values())

    def to_dict(self) -> dict[str, Any]:
        down = [
            f"model {name}: {self.down.get(name, 'endpoint unreachable')}"
            for name, up in self.endpoints.items()
            if not up
        ]
        if self.database is not None:
            down.append(f"database: {self.database}")
        return {
            "status": "ready" if self.ready else "not ready",
            "not_ready": down,
            "endpoints": self.endpoints,
            "database": "writable" if self.database is None else self.database,
        }


async def readiness(pool: Pool, factory: sessionmaker[Session]) -> Readiness:
    """Ask every pool endpoint whose circuit is closed at once, and make a write check on the store that
    leaves nothing behind."""
    entries = [e for e in pool.all_entries() if e.backend != "recorded"]
    outages = {e.name: pool.circuits.outage(e.name) for e in entries}
    down = {name: outage.describe() for name, outage in outages.items() if outage is not None}
    answers = await asyncio.gather(*(_up(pool, e, e.name in down) for e in entries))
    problem = await asyncio.to_thread(db.write_problem, factory)
    return Readiness({e.name: up for e, up in zip(entries, answers, strict=True)}, problem, down)


async def _up(pool: Pool, entry: ModelEntry, down: bool) -> bool:
    return False if down else await pool.health(entry)


async def endpoint_health(pool: Pool) -> dict[str, bool]:
    """Whether each entry's endpoint (router and candidates) answers now, all asked at once."""
    entries = pool.all_entries()
    results = await asyncio.gather(*(pool.health(e) for e in entries))
    return {e.name: ok for e, ok in zip(entries, results, strict=True)}
