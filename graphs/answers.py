"""Answers: the official SQuAD / HotpotQA / Router-R1 EM and F1, numbers and choice letters, and the
format a question asks for (a choice letter, a number, a short span) with its grammar and its cleaner.

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

Pure functions with no dependencies, so graphs, training and evaluation parse and score answers one way.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
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


# -- answer formats: what a question asks for, and an answer cut to it ------------------------------------
AnswerFormat = Literal["choice", "number", "span"]
ANSWER_MAX_CHARS = 200
"""Cap on a final answer's length, whatever the model writes."""

ANSWER_RULES: dict[AnswerFormat, str] = {
    "choice": "Reply with the letter of the correct choice only ({letters}).",
    "number": "Reply with the final number only, no units or words.",
    "span": "Reply with the shortest answer: a few words, no explanation.",
}

_CHOICE_LINE = re.compile(r"^\s*\(?([A-H])[\).:]\s+\S", re.MULTILINE)
_CHOICE_INLINE = re.compile(r"\(([A-H])\)\s*\S")
_MATH = re.compile(
    r"\bhow (many|much|long|far|old)\b|\bcalculate\b|\bcompute\b|\bsolve\b|\bsum\b|\btotal\b|\bpercent"
    r"|\baverage\b|\d\s*[-+*/×÷^=]\s*\d|\bwhat is \d",
    re.IGNORECASE,
)


def choice_letters(question: str) -> list[str]:
    letters = _CHOICE_LINE.findall(question) or _CHOICE_INLINE.findall(question)
    return list(dict.fromkeys(letters)) if len(set(letters)) >= 2 else []


def answer_format(question: str) -> AnswerFormat:
    """Choice letter when the question lists lettered choices, a number for math, else a short span."""
    if choice_letters(question):
        return "choice"
    if _MATH.search(question):
        return "number"
    return "span"


def answer_grammar(fmt: AnswerFormat, letters: Sequence[str]) -> str | None:
    """GBNF that forces a self-hosted aggregator into the answer format (None: free text)."""
    if fmt == "choice" and letters:
        return "root ::= [" + "".join(letters) + "]"
    if fmt == "number":
        return 'root ::= "-"? [0-9] [0-9]{0,11} ("." [0-9]{1,4})?'
    return None


def clean_answer(text: str, fmt: AnswerFormat, letters: Sequence[str] = ()) -> str:
    """The answer in its format: a choice letter, a plain number or a short first line ('' if none)."""
    text = text.strip()
    if fmt == "choice":
        found = re.findall(r"\b([A-H])\b", text)
        picks = [c for c in found if not letters or c in letters]
        return picks[0] if picks else ""
    if fmt == "number":
        numbers = _NUMBER.findall(text)
        if numbers:
            value = numbers[-1].replace(",", "")
            return value[:-2] if value.endswith(".0") else value
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^(final answer|answer)\s*:\s*", "", line, flags=re.IGNORECASE).strip()
    return line[:ANSWER_MAX_CHARS].rstrip(".").strip()


# -- what a model's reply answers ----------------------------------------------------------------------
CONCISE_WORDS = 25
"""A one-line reply this short is an answer (a name, or one sentence stating it), not an explanation."""
_ANSWER_LINE = re.compile(r"^\s*(?:final\s+)?answer\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def reply_answer(reply: str | None) -> str | None:
    """The answer a reply states: its last ``Answer:`` line, or the whole reply when it is short."""
    if not reply or not reply.strip():
        return None
    stated = _ANSWER_LINE.findall(reply)
    if stated:
        return str(stated[-1])
    short = len(reply.split()) <= CONCISE_WORDS and len(reply.strip().splitlines()) == 1
    return reply.strip() if short else None


def stated_answer(question: str, reply: str | None) -> str | None:
    """The answer a reply states (:func:`reply_answer`) cut to the question's format: a choice letter, a
    number or a short span; None when it states none in that format."""
    stated = reply_answer(reply)
    if stated is None:
        return None
    fmt = answer_format(question)
    if fmt == "number" and final_number(stated) is None:
        return None  # "fourteen": clean_answer would keep the words, but a number was asked for
    return clean_answer(stated, fmt, choice_letters(question)) or None
