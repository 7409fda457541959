"""Stored runs as plain training records, and labelled QA datasets imported as feedback.

Storage knows nothing of prompts: ``records`` gives questions, gold answers and trajectories, and
``app.service.export`` renders them into the chat rows TRL reads (it needs the graphs' prompt templates).

How ``import_qa`` attaches a dataset row ``{"question", "answers"}``:

* every stored run whose question is the same text (surrounding whitespace ignored) gets a ``gold``
  feedback row with ``source="dataset"``, ``gold_answer`` the first answer and ``gold_aliases`` all;
* a question no run has asked becomes a *pending* run (``status="pending"``, no answer, no hops) with
  that feedback, so it is a labelled prompt for GRPO until a graph answers it;
* importing the same row again adds nothing (a run whose latest dataset feedback has the same aliases).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import session_scope
from storage.feedback import label_answers
from storage.models import Feedback, Run

DATASET_SOURCE = "dataset"


@dataclass(frozen=True)
class ImportResult:
    attached: int
    """Feedback rows added to runs that already asked the question."""
    pending: int
    """Questions no run had asked, stored as pending runs."""
    unchanged: int
    """Rows already imported with the same answers."""


def import_qa(
    factory: sessionmaker[Session], rows: Iterable[dict[str, Any]], *, graph: str = "router-r1"
) -> ImportResult:
    """Store labelled QA rows as ``source="dataset"`` gold feedback (see the module docstring)."""
    attached = pending = unchanged = 0
    with session_scope(factory) as session:
        for row in rows:
            question, answers = _checked(row)
            runs = session.scalars(select(Run).where(func.trim(Run.question) == question)).all()
            if not runs:
                run = Run(question=question, graph=graph, status="pending")
                session.add(run)
                session.flush()
                session.add(_gold(run.id, answers))
                pending += 1
                continue
            for run in runs:
                latest = session.scalar(
                    select(Feedback)
                    .where(Feedback.run_id == run.id, Feedback.source == DATASET_SOURCE)
                    .order_by(Feedback.id.desc())
                    .limit(1)
                )
                if latest is not None and (latest.gold_aliases or [str(latest.gold_answer)]) == answers:
                    unchanged += 1
                    continue
                session.add(_gold(run.id, answers))
                attached += 1
    return ImportResult(attached=attached, pending=pending, unchanged=unchanged)


def _checked(row: dict[str, Any]) -> tuple[str, list[str]]:
    """The row's question and gold aliases, or a ValueError: the last check before gold labels are stored
    (callers read files through ``app.evaluation.qa_file``, which names the line)."""
    question, answers = row.get("question"), row.get("answers")
    # A string is iterable: without this check "bcd" would become the aliases b, c and d.
    if not isinstance(answers, list | tuple) or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"a QA row's answers must be a list of strings, not {answers!r}")
    aliases = [a.strip() for a in answers if a.strip()]
    if not isinstance(question, str) or not question.strip() or not aliases:
        raise ValueError(f"a QA row needs a question and at least one answer: {row!r}")
    return question.strip(), aliases


def _gold(run_id: int, answers: list[str]) -> Feedback:
    return Feedback(
        run_id=run_id, label="gold", gold_answer=answers[0], gold_aliases=answers, source=DATASET_SOURCE
    )


def records(
    factory: sessionmaker[Session],
    *,
    since: datetime | None = None,
    graph: str | None = None,
    labelled_only: bool = False,
) -> list[dict[str, Any]]:
    """Finished (``ok``) and pending runs, oldest first, with the gold answers of their latest feedback.

    ``answers``: the gold aliases of a ``gold`` label, the run's own answer for ``correct``, else ``[]``;
    ``correct`` says whether the run's answer was judged right (None when nobody judged it).
    ``labelled_only`` keeps the runs with at least one gold answer.
    """
    query = select(Run).where(Run.status.in_(("ok", "pending"))).order_by(Run.id)
    if since is not None:
        query = query.where(Run.created_at >= since)
    if graph:
        query = query.where(Run.graph == graph)
    with factory() as session:
        runs = session.scalars(query).all()
        latest: dict[int, Feedback] = {}
        if runs:
            feedback = session.scalars(
                select(Feedback).where(Feedback.run_id.in_([r.id for r in runs])).order_by(Feedback.id)
            ).all()
            latest = {row.run_id: row for row in feedback}
    out = []
    for run in runs:
        label = latest.get(run.id)
        answers, correct = label_answers(label, run.answer)
        if labelled_only and not answers:
            continue
        out.append(
            {
                "run_id": run.id,
                "graph": run.graph,
                "status": run.status,
                "question": run.question,
                "answer": run.answer,
                "trajectory": run.trajectory,
                "answers": answers,
                "correct": correct,
                "label_source": label.source if label is not None else None,
                "created_at": run.created_at.isoformat(),
            }
        )
    return out
