"""Evaluation items from JSONL, Parquet, a short sample name (``nq``, ``gsm8k``) or a cached HF dataset."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from app.config import PROJECT_ROOT
from app.evaluation.qa_file import DataError, QARow, qa_row, read_qa_file, resolve_path, unique_ids

Task = Literal["qa", "math", "choice"]
DATA_DIR = PROJECT_ROOT / "data"
SHORT_NAMES = {
    "nq": "nq_open_dev300.jsonl",
    "hotpotqa": "hotpotqa_dev300.jsonl",
    "musique": "musique_dev100.jsonl",
    "bamboogle": "bamboogle_dev25.jsonl",
    "gsm8k": "gsm8k_train500.jsonl",
    "math": "math500_dev50.jsonl",
    "csqa": "csqa_dev100.jsonl",
}
_MATH_HINTS = ("gsm8k", "math")
_CHOICE_HINTS = ("csqa", "commonsense")


@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str
    answers: list[str]
    task: Task = "qa"
    choices: dict[str, str] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """What every method is asked: the question, its choices, and the expected answer form."""
        if self.task == "choice" and self.choices:
            options = "\n".join(f"{letter}. {text}" for letter, text in self.choices.items())
            return f"{self.question}\n{options}\nAnswer with the letter of the correct choice."
        if self.task == "math":
            return (
                f"{self.question}\nWork it out in a few short steps, then end with a line 'Answer: <number>'."
            )
        return self.question


@dataclass(frozen=True)
class Dataset:
    name: str
    items: list[EvalItem]


def task_for(name: str, row: dict[str, Any]) -> Task:
    """The row's ``task`` when given, else choice (has choices), math (GSM8K / MATH names), else QA."""
    given = str(row.get("task") or "").lower()
    if given in ("qa", "math", "choice"):
        return given  # type: ignore[return-value]
    lowered = name.lower()
    if row.get("choices") or any(h in lowered for h in _CHOICE_HINTS) or given in _CHOICE_HINTS:
        return "choice"
    if any(h in lowered for h in _MATH_HINTS) or any(h in given for h in _MATH_HINTS):
        return "math"
    return "qa"


def load_dataset(spec: str, limit: int | None = None, skip: int = 0) -> Dataset:
    """A .jsonl / .parquet path, a short name (``nq``, ``gsm8k``, …) or ``hf:<name>[:<cfg>][@split]``.

    ``skip`` leaves out the first items and ``limit`` keeps the next ones, so that disjoint slices of one
    file serve different purposes (tuning a pool's descriptors, evaluating). A relative path is looked up in
    the working directory, then in the project (``data/…`` works from anywhere). Every error names the
    file and line (see :mod:`app.evaluation.qa_file`).
    """
    if spec.startswith("hf:"):
        name, rows = _hf_rows(spec[3:])
    elif spec in SHORT_NAMES:
        path = DATA_DIR / SHORT_NAMES[spec]
        if not path.is_file():
            raise DataError(f"{spec}: sample file {path} does not exist")
        name, rows = spec, read_qa_file(path)
    else:
        try:
            path = resolve_path(spec)
        except DataError as exc:
            names = ", ".join(SHORT_NAMES)
            raise DataError(f"{exc}; not a short name ({names}) or hf:<dataset> either") from None
        name, rows = path.stem, read_qa_file(spec)
    items = [_item(name, row) for row in rows][skip:]
    return Dataset(name=name, items=items[:limit] if limit else items)


@contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face libraries in offline mode for one load, through their config, not the environment.

    ``datasets`` and ``huggingface_hub`` read HF_HUB_OFFLINE once at import into module constants and
    consult those at call time; setting them (and restoring them after) keeps app/config.py the only
    reader and writer of the process environment.
    """
    import datasets
    from huggingface_hub import constants

    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _hf_rows(spec: str) -> tuple[str, list[QARow]]:
    """A Hugging Face dataset from the local cache only (offline: nothing is downloaded)."""
    name_config, _, split = spec.partition("@")
    name, _, config = name_config.partition(":")
    import datasets

    try:
        with _offline():
            loaded = datasets.load_dataset(name, config or None, split=split or "validation")
    except Exception as exc:  # any failure offline means: not in the local cache
        raise DataError(
            f"hf:{spec}: not available from the local Hugging Face cache (offline mode; "
            f"download it once with datasets.load_dataset while online): {type(exc).__name__}: {exc}"
        ) from None
    rows = []
    for number, row in enumerate(loaded):
        default_id = row.get("question_id") or row.get("qid") or f"{name}-{number}"
        rows.append(qa_row(dict(row), f"hf:{spec}: row {number + 1}", default_id))
    return name.split("/")[-1], unique_ids(rows)


def _choices(row: dict[str, Any]) -> dict[str, str]:
    raw = row.get("choices")
    if isinstance(raw, dict) and "label" in raw and "text" in raw:  # HF commonsense_qa layout
        return {str(k): str(v) for k, v in zip(raw["label"], raw["text"], strict=False)}
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {chr(ord("A") + i): str(v) for i, v in enumerate(raw)}
    return {}


def _item(name: str, row: QARow) -> EvalItem:
    return EvalItem(
        id=row.id,
        question=row.question,
        answers=row.answers,
        task=task_for(name, row.raw),
        choices=_choices(row.raw),
    )
