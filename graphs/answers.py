"""Answer scoring shared by evaluation and training rewards: SQuAD / Router-R1 normalisation, EM, F1.

Pure functions with no dependencies, so graphs, training and evaluation score answers one way.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (SQuAD's normalisation).

    >>> normalize_answer("The  Eiffel Tower!")
    'eiffel tower'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION and unicodedata.category(ch)[0] != "P")
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold alias."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def substring_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when any normalised gold alias occurs inside the normalised prediction."""
    pred = normalize_answer(prediction)
    return float(any((gold := normalize_answer(g)) and gold in pred for g in golds))


def token_f1(prediction: str, golds: Iterable[str]) -> float:
    """Best token-overlap F1 against the gold aliases (SQuAD)."""
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        gold_tokens = normalize_answer(gold).split()
        common = Counter(pred_tokens) & Counter(gold_tokens)
        overlap = sum(common.values())
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        if overlap == 0:
            continue
        precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def final_number(text: str) -> float | None:
    """The last number written in ``text`` (``1,000`` = ``1000`` = ``1000.0``), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def numeric_match(prediction: str, golds: Iterable[str], tolerance: float = 1e-6) -> float:
    """1.0 when the prediction's final number equals a gold's final number."""
    pred = final_number(prediction)
    if pred is None:
        return 0.0
    for gold in golds:
        value = final_number(gold)
        if value is not None and abs(pred - value) <= tolerance * max(1.0, abs(value)):
            return 1.0
    return 0.0


def choice_letter(text: str) -> str | None:
    """The choice letter an answer names: 'B', '(b)', 'B. wind', 'answer: b' → 'B'."""
    stripped = text.strip()
    match = re.match(r"^\(?([A-Ea-e])\)?(?:[.):\s]|$)", stripped)
    if match:
        return match.group(1).upper()
    match = re.search(r"answer(?: is)?\s*[:\-]?\s*\(?([A-Ea-e])\)?\b", stripped, flags=re.IGNORECASE)
    return match.group(1).upper() if match else None


def choice_match(prediction: str, golds: Iterable[str]) -> float:
    letter = choice_letter(prediction)
    return float(letter is not None and any(letter == g.strip().upper() for g in golds))
