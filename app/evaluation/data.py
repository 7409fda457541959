"""Evaluation items from JSONL, Parquet, a short sample name (``nq``, ``gsm8k``) or a cached HF dataset."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.config import PROJECT_ROOT

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


class DataError(ValueError):
    """The dataset cannot be found or read, or a row lacks id / question / answers."""


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
            return f"{self.question}\nGive the final answer as a number."
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


def load_dataset(spec: str, limit: int | None = None) -> Dataset:
    """A .jsonl / .parquet path, a short name (``nq``, ``gsm8k``, …) or ``hf:<name>[:<cfg>][@split]``."""
    if spec.startswith("hf:"):
        name, rows = _hf_rows(spec[3:])
    else:
        path = _resolve(spec)
        name = spec if spec in SHORT_NAMES else path.stem
        rows = _parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)
    items = [_item(name, row, number) for number, row in enumerate(rows, 1)]
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise DataError(f"{spec}: item ids are not unique")
    return Dataset(name=name, items=items[:limit] if limit else items)


def _resolve(spec: str) -> Path:
    if spec in SHORT_NAMES:
        path = DATA_DIR / SHORT_NAMES[spec]
        if not path.is_file():
            raise DataError(f"{spec}: sample file {path} does not exist")
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(
            f"{spec}: no such file, and not a short name ({', '.join(SHORT_NAMES)}) or hf:<dataset>"
        )
    return path


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not JSON ({exc})") from None
    return rows


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_table(path).to_pylist())
    except Exception as exc:  # pyarrow raises several types for an unreadable file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None


def _hf_rows(spec: str) -> tuple[str, list[dict[str, Any]]]:
    """A Hugging Face dataset from the local cache only (HF_DATASETS_OFFLINE semantics)."""
    name_config, _, split = spec.partition("@")
    name, _, config = name_config.partition(":")
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    datasets.config.HF_DATASETS_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    try:
        loaded = datasets.load_dataset(name, config or None, split=split or "validation")
    except Exception as exc:  # any failure offline means: not in the local cache
        raise DataError(
            f"hf:{spec}: not available from the local Hugging Face cache (offline mode; "
            f"download it once with datasets.load_dataset while online): {type(exc).__name__}: {exc}"
        ) from None
    rows = []
    for number, row in enumerate(loaded):
        row = dict(row)
        row.setdefault("id", row.get("question_id") or row.get("qid") or f"{name}-{number}")
        rows.append(row)
    return name.split("/")[-1], rows


def _answers(row: dict[str, Any]) -> list[str]:
    raw = row.get("answers", row.get("answer"))
    if isinstance(raw, dict):  # SQuAD-style {"text": [...]}
        raw = raw.get("text")
    if isinstance(raw, str):
        raw = [raw.split("####")[-1].strip() if "####" in raw else raw]
    if not isinstance(raw, list):
        return []
    return [str(a).strip() for a in raw if str(a).strip()]


def _choices(row: dict[str, Any]) -> dict[str, str]:
    raw = row.get("choices")
    if isinstance(raw, dict) and "label" in raw and "text" in raw:  # HF commonsense_qa layout
        return {str(k): str(v) for k, v in zip(raw["label"], raw["text"], strict=False)}
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {chr(ord("A") + i): str(v) for i, v in enumerate(raw)}
    return {}


def _item(name: str, row: dict[str, Any], number: int) -> EvalItem:
    question = str(row.get("question") or row.get("query") or "").strip()
    answers = _answers(row) or ([str(row["answerKey"])] if row.get("answerKey") else [])
    if not question or not answers:
        raise DataError(f"{name}: row {number} needs a question and at least one answer")
    return EvalItem(
        id=str(row.get("id", number)),
        question=question,
        answers=answers,
        task=task_for(name, row),
        choices=_choices(row),
    )
