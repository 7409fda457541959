"""Per-item scores from :mod:`graphs.answers`, and the primary metric each task is judged by."""

from __future__ import annotations

from typing import Any

from app.evaluation.data import EvalItem
from graphs.answers import (
    Normalization,
    choice_match,
    exact_match,
    numeric_match,
    substring_match,
    token_f1,
)

PRIMARY = {"qa": "em", "math": "numeric", "choice": "choice"}
"""QA: exact match (Router-R1's metric); math: final-number equality; multiple choice: the letter."""


def score(item: EvalItem, answer: str, normalize: Normalization = "official") -> dict[str, Any]:
    """EM, F1 (SQuAD v1.1), substring EM, plus numeric (math) or choice-letter (choice) accuracy, ``correct``.

    ``normalize`` is the answer normalisation of EM, F1 and substring EM (official by default, ``unicode``
    the lenient variant); it is kept in the scores so that a report can say which one it shows.
    """
    scores: dict[str, Any] = {
        "em": exact_match(answer, item.answers, normalize),
        "f1": token_f1(answer, item.answers, normalize),
        "sub_em": substring_match(answer, item.answers, normalize),
        "normalize": normalize,
    }
    if item.task == "math":
        scores["numeric"] = numeric_match(answer, item.answers)
    if item.task == "choice":
        scores["choice"] = choice_match(answer, item.answers)
    scores["primary"] = PRIMARY[item.task]
    scores["correct"] = float(scores[PRIMARY[item.task]])
    return scores
