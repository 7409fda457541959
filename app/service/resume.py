"""Which runs can be resumed, and who owns a run: the checks before the service continues a graph run from
its last checkpoint, and the hops a resumed run starts from."""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.service.registry import REGISTRY
from app.service.runs import hop_from_row, hop_key, hop_row
from graphs.hops import Hop
from storage import db


class ResumeError(ValueError):
    """The run cannot be resumed (unknown, finished, still running, no checkpoint); the message says why."""


def ensure_resumable(run_id: int, run: Any) -> None:
    """Raise :class:`ResumeError` unless the stored ``run`` (None: unknown) may be resumed by this process."""
    if run is None:
        raise ResumeError(f"no run with id {run_id}")
    if run.graph not in REGISTRY:
        raise ResumeError(f"run {run_id} ({run.graph}) was recorded directly, not run by a graph")
    if run.status == "ok":
        raise ResumeError(f"run {run_id} already finished (status ok): nothing to resume")
    if run.status == "pending":
        raise ResumeError(f"run {run_id} is a pending dataset question that no graph ran yet: ask it")
    if run.status == "running" and run.owner:
        host, _, pid = str(run.owner).rpartition(":")
        if host != socket.gethostname():
            raise ResumeError(f"run {run_id} is running on {host}: resume it there if that process died")
        if not pid.isdigit() or pid_alive(int(pid)):
            raise ResumeError(f"run {run_id} is still running (process {pid})")
    elif run.status not in ("failed", "running"):
        raise ResumeError(f"run {run_id} has status {run.status!r}, which cannot be resumed")


def no_checkpoint(run_id: int, *, durable: bool) -> ResumeError:
    where = "" if durable else " (an in-memory store keeps them in its process)"
    return ResumeError(
        f"run {run_id} has no checkpoint to resume from{where}: it ran before routegraph kept "
        "checkpoints, or they were removed"
    )


def hops_so_far(factory: sessionmaker[Session], run: Any, checkpointed: list[Hop]) -> list[Hop]:
    """The run's hops: the stored ones, then those its checkpoint has but the store missed (the process
    died before storing them), which are stored now; none is stored twice."""
    hops = [hop_from_row(row) for row in run.hops]
    seen = {(row.node, row.model, row.subtask_id, row.started_at) for row in run.hops}
    for hop in checkpointed:
        if hop_key(hop) not in seen:
            seen.add(hop_key(hop))
            db.add_hop(factory, run.id, len(hops), **hop_row(hop))
            hops.append(hop)
    return hops


def process_owner() -> str:
    """host:pid of this process, as a run's ``owner`` column holds it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
