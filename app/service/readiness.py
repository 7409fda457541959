"""Whether the service can answer now: each pool endpoint reachable and the trace store writable (what
``GET /ready`` reports)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.pool import Pool
from storage import db


@dataclass(frozen=True)
class Readiness:
    """Whether the service can answer now: each pool endpoint reachable, the trace store writable."""

    endpoints: dict[str, bool]
    """Pool entry (router included) → its endpoint answered. Recorded-outcome entries have none."""
    database: str | None
    """Why the trace store cannot take a write, or None."""

    @property
    def ready(self) -> bool:
        return self.database is None and all(self.endpoints.values())

    def to_dict(self) -> dict[str, Any]:
        down = [f"model {name}: endpoint unreachable" for name, up in self.endpoints.items() if not up]
        if self.database is not None:
            down.append(f"database: {self.database}")
        return {
            "status": "ready" if self.ready else "not ready",
            "not_ready": down,
            "endpoints": self.endpoints,
            "database": "writable" if self.database is None else self.database,
        }


async def readiness(pool: Pool, factory: sessionmaker[Session]) -> Readiness:
    """Ask every pool endpoint at once, and make a write check on the store that leaves nothing behind."""
    entries = [e for e in pool.all_entries() if e.backend != "recorded"]
    answers = await asyncio.gather(*(pool.health(e) for e in entries))
    problem = await asyncio.to_thread(db.write_problem, factory)
    return Readiness({e.name: up for e, up in zip(entries, answers, strict=True)}, problem)
