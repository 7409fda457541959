"""The read side of the trace store as the UI draws it: run rows with their judged feedback, the JSONL
export, a run's hop timeline, the dashboard's aggregates and the training run behind a router's weights."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from graphs.answers import substring_match
from storage import db


def run_rows(factory: sessionmaker[Session], limit: int = 500, **filters: Any) -> list[dict[str, Any]]:
    """Stored runs as flat table rows, with their latest feedback judged against the answer."""
    labels = db.latest_feedback(factory)
    return [
        {
            "id": run.id,
            "created_at": run.created_at,
            "graph": run.graph,
            "status": run.status,
            "question": run.question,
            "answer": run.answer,
            "total_cost": run.total_cost,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "latency_s": run.latency_s,
            "error": run.error,
            "correct": judge(run.answer, labels.get(run.id)),
        }
        for run in db.list_runs(factory, limit=limit, **filters)
    ]


def judge(answer: str | None, feedback: Any) -> bool | None:
    """Whether feedback says the answer is right: a label, or the gold answer (SQuAD-normalised) within it."""
    if feedback is None:
        return None
    if feedback.label == "gold":
        return bool(substring_match(answer or "", [feedback.gold_answer or ""]))
    return bool(feedback.label == "correct")


def export_jsonl(factory: sessionmaker[Session], run_ids: list[int]) -> str:
    """The runs with their hops and feedback, one JSON object a line."""
    lines = []
    for run_id in run_ids:
        run = db.get_run(factory, run_id)
        if run is None:
            continue
        data = {c.name: getattr(run, c.name) for c in run.__table__.columns}
        data["hops"] = [{c.name: getattr(h, c.name) for c in h.__table__.columns} for h in run.hops]
        data["feedback"] = [
            {c.name: getattr(f, c.name) for c in f.__table__.columns}
            for f in db.feedback_for(factory, run_id)
        ]
        lines.append(json.dumps(data, default=_json_default))
    return "\n".join(lines) + ("\n" if lines else "")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def hop_timeline(run: Any) -> list[dict[str, Any]]:
    """One bar per stored hop: start, end (start + latency) and what to colour and label it by."""
    rows = []
    for hop in run.hops:
        start = hop.started_at or run.created_at
        rows.append(
            {
                "hop": f"{hop.index} {hop.node}",
                "model": hop.model or "(none)",
                "start": start,
                "end": start + timedelta(seconds=max(hop.latency_s, 0.001)),
                "cost": hop.cost,
                "error": hop.error,
            }
        )
    return rows


def dashboard(factory: sessionmaker[Session], limit: int = 10_000) -> dict[str, list[dict[str, Any]]]:
    """Daily runs and cost, cost and accuracy per graph, and the share of hops per model."""
    daily: dict[tuple[Any, str], dict[str, Any]] = {}
    graphs: dict[str, dict[str, Any]] = {}
    for row in run_rows(factory, limit=limit):
        day = daily.setdefault(
            (row["created_at"].date(), row["graph"]),
            {"day": row["created_at"].date(), "graph": row["graph"], "runs": 0, "cost": 0.0},
        )
        day["runs"] += 1
        day["cost"] += row["total_cost"]
        per = graphs.setdefault(
            row["graph"], {"graph": row["graph"], "runs": 0, "cost": 0.0, "judged": 0, "right": 0}
        )
        per["runs"] += 1
        per["cost"] += row["total_cost"]
        if row["correct"] is not None:
            per["judged"] += 1
            per["right"] += int(row["correct"])
    by_graph = [
        {
            "graph": g["graph"],
            "runs": g["runs"],
            "mean_cost": g["cost"] / g["runs"],
            "judged": g["judged"],
            "accuracy": g["right"] / g["judged"] if g["judged"] else None,
        }
        for g in graphs.values()
    ]
    usage = db.model_usage(factory)
    calls = sum(u["calls"] for u in usage) or 1
    routes = [{"model": u["model"], "hops": u["calls"], "share": u["calls"] / calls} for u in usage]
    return {
        "daily": sorted(daily.values(), key=lambda d: d["day"]),
        "by_graph": by_graph,
        "routes": routes,
    }


def trained_by(factory: sessionmaker[Session], weights: str | None) -> dict[str, Any] | None:
    """The training run that produced a router's weights (a checkpoint path as training stored it), for the
    Pool page: its id, kind, when it finished and how many stored runs it learnt from; None when no
    finished training run in this store made them (a bundled model, weights trained elsewhere)."""
    run = db.training_run_for_checkpoint(factory, weights) if weights else None
    if run is None:
        return None
    return {
        "id": run.id,
        "kind": run.kind,
        "finished_at": run.finished_at,
        "source_runs": len((run.source_run_ids or {}).get("ids", [])),
        "steps": len((run.metrics or {}).get("steps", [])),
    }
