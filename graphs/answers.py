"""Answer scoring for evaluation and training rewards: the official SQuAD / HotpotQA / Router-R1 EM and F1.

By default every score is the one the official scripts compute, to the bit: SQuAD v1.1's
``evaluate-v1.1.py``, HotpotQA's ``hotpot_evaluate_v1.py`` and Router-R1's ``qa_em.py`` all normalise an
answer the same way (lowercase; drop ASCII ``string.punctuation``; replace the articles a / an / the by a
space; collapse whitespace) and take the best score over the gold aliases. Papers' tables come from that
code, so ours must agree with it, quirks included: no Unicode folding, ``«Paris»`` keeps its guillemets,
and F1 between two answers with no tokens left is 0.

``normalize="unicode"`` is a lenient variant, never the default: NFKC folding (fullwidth digits, ligatures)
and every Unicode punctuation character (category P*) removed before the same steps. Only normalisation
changes; EM, F1 and substring EM are computed the official way on its output.

Where the official scripts differ, the difference is a named option: HotpotQA's and Router-R1's F1 give 0
when either normalised side is ``yes``, ``no`` or ``noanswer`` and the two differ (``rule="hotpotqa"``);
SQuAD's does not (``rule="squad"``, the default). Golds passed as one string are one alias, and no golds
score 0 (Router-R1's behaviour; SQuAD's script would fail on an empty list).

Pure functions with no dependencies, so graphs, training and evaluation score answers one way.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Literal

Normalization = Literal["official", "unicode"]
NORMALIZATIONS: tuple[Normalization, ...] = ("official", "unicode")
F1Rule = Literal["squad", "hotpotqa"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_YES_NO = ("yes", "no", "noanswer")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize_answer(text: str, normalize: Normalization = "official") -> str:
    """SQuAD's normalisation: lowercase, drop punctuation, articles → space, collapse whitespace.

    ``official`` drops only ASCII punctuation; ``unicode`` first applies NFKC and also drops every Unicode
    punctuation character.

    >>> normalize_answer("The  Eiffel Tower!")
    'eiffel tower'
    >>> normalize_answer("«Paris»"), normalize_answer("«Paris»", "unicode")
    ('«paris»', 'paris')
    """
    if normalize == "official":
        text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    elif normalize == "unicode":
        text = unicodedata.normalize("NFKC", text).lower()
        text = "".join(ch for ch in text if ch not in _PUNCTUATION and unicodedata.category(ch)[0] != "P")
    else:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, not {normalize!r}")
    return " ".join(_ARTICLES.sub(" ", text).split())


def _aliases(golds: str | Iterable[str]) -> list[str]:
    """A bare string is one alias, never its characters (as Router-R1's ``em_check`` treats it)."""
    return [golds] if isinstance(golds, str) else list(golds)


def exact_match(prediction: str, golds: str | Iterable[str], normalize: Normalization = "official") -> float:
    """1.0 when the normalised prediction equals any normalised gold alias (two empty strings are equal)."""
    pred = normalize_answer(prediction, normalize)
    return float(any(pred == normalize_answer(g, normalize) for g in _aliases(golds)))


def substring_match(
    prediction: str, golds: str | Iterable[str], normalize: Normalization = "official"
) -> float:
    """1.0 when a normalised gold alias occurs inside the normalised prediction (Router-R1's ``subem_check``).

    As in the official code, a gold that normalises to ``''`` (``"The"``) occurs in every prediction.
    """
    pred = normalize_answer(prediction, normalize)
    return float(any(normalize_answer(g, normalize) in pred for g in _aliases(golds)))


def _f1(prediction: str, gold: str, rule: F1Rule) -> float:
    """One pair's F1 on normalised strings, with the official scripts' arithmetic."""
    if rule == "hotpotqa" and prediction != gold and (prediction in _YES_NO or gold in _YES_NO):
        return 0.0
    pred_tokens, gold_tokens = prediction.split(), gold.split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:  # also when either side has no tokens: two empty answers score 0, not 1
        return 0.0
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def token_f1(
    prediction: str,
    golds: str | Iterable[str],
    normalize: Normalization = "official",
    rule: F1Rule = "squad",
) -> float:
    """Best token-overlap F1 over the gold aliases: SQuAD v1.1's, or HotpotQA / Router-R1's yes/no rule."""
    if rule not in ("squad", "hotpotqa"):
        raise ValueError(f"rule must be 'squad' or 'hotpotqa', not {rule!r}")
    pred = normalize_answer(prediction, normalize)
    return max((_f1(pred, normalize_answer(g, normalize), rule) for g in _aliases(golds)), default=0.0)


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
