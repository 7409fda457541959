"""Read a QA file (JSONL or Parquet: ``question``, ``answers``) into checked rows; errors name file and line.

The one reader of users' QA data: evaluation (``routegraph eval --data``), training (recipes' ``data``) and
``routegraph traces import-qa`` all go through :func:`read_qa_file`, so a file either works everywhere or
fails everywhere with the same message, e.g. ``qa.jsonl:7: answers must be a list of strings or one
string, not a dict``.

Row format: ``question`` (a non-empty string), ``answers`` (a list of gold aliases; one string is one alias,
never split into characters; numbers are taken as written), optional ``id`` (string or integer; the line
number when absent). Layouts of common datasets are read too: ``query`` for the question, ``answer`` or
``answerKey`` for the answers, SQuAD's ``{"text": [...]}`` and GSM8K's ``… #### 42`` answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import PROJECT_ROOT


class DataError(ValueError):
    """The dataset cannot be found or read, or a row is not a usable QA item (the message says where)."""


@dataclass(frozen=True)
class QARow:
    id: str
    question: str
    answers: list[str]
    raw: dict[str, Any]
    """The whole object, for the fields a caller reads beyond these (``choices``, ``task``, …)."""
    where: str
    """``file:line`` (or ``source: row N``), for a caller's own errors about this row."""


def resolve_path(spec: str | Path) -> Path:
    """A data path as given (absolute, or relative to the working directory), else relative to the project.

    Recipes and docs name files as ``data/nq_open_dev300.jsonl``; this makes them work from any directory.
    """
    given = Path(spec).expanduser()
    if given.is_absolute() or given.exists():
        found = given
    elif (PROJECT_ROOT / given).exists():
        found = PROJECT_ROOT / given
    else:
        raise DataError(f"{spec}: no such file (looked in {Path.cwd()} and in the project, {PROJECT_ROOT})")
    if not found.is_file():
        raise DataError(f"{spec}: not a file" if found.exists() else f"{spec}: no such file")
    return found


def read_qa_file(path: str | Path) -> list[QARow]:
    """Every row of a ``.jsonl`` or ``.parquet`` QA file, checked, ids unique (blank lines skipped)."""
    found = resolve_path(path)
    if found.suffix == ".parquet":
        rows = enumerate(_parquet_objects(found), 1)
        return unique_ids(qa_row(obj, f"{path}: row {n}", n) for n, obj in rows)
    return unique_ids(qa_row(obj, f"{path}:{n}", n) for n, obj in _jsonl_objects(found, str(path)))


def qa_row(obj: Any, where: str, default_id: int | str) -> QARow:
    """One object checked as a QA item; ``where`` opens every error."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with question and answers, not {_kind(obj)}")
    question = obj.get("question", obj.get("query"))
    if question is None:
        raise DataError(f"{where}: missing question")
    if not isinstance(question, str):
        raise DataError(f"{where}: question must be a string, not {_kind(question)}")
    if not question.strip():
        raise DataError(f"{where}: question is empty")
    raw_id = obj.get("id")
    if raw_id is None:
        raw_id = default_id
    elif isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise DataError(f"{where}: id must be a string or an integer, not {_kind(raw_id)}")
    return QARow(str(raw_id), question.strip(), _answers(obj, where), obj, where)


def unique_ids(rows: Iterable[QARow]) -> list[QARow]:
    """The rows, or an error naming a repeated id and where it was first used."""
    seen: dict[str, str] = {}
    out = []
    for row in rows:
        if row.id in seen:
            raise DataError(f"{row.where}: id {row.id!r} is already used ({seen[row.id]})")
        seen[row.id] = row.where
        out.append(row)
    return out


def _answers(obj: dict[str, Any], where: str) -> list[str]:
    key = next((k for k in ("answers", "answer", "answerKey") if obj.get(k) is not None), None)
    if key is None:
        raise DataError(f"{where}: missing answers")
    raw = obj[key]
    if isinstance(raw, dict) and "text" in raw:  # SQuAD's {"text": [...], "answer_start": [...]}
        raw = raw["text"]
    if isinstance(raw, str) and "####" in raw:  # GSM8K: the worked solution, then "#### 42"
        raw = raw.rsplit("####", 1)[-1]
    if _scalar(raw):
        raw = [raw]  # one alias, not its characters
    if not isinstance(raw, list):
        raise DataError(f"{where}: {key} must be a list of strings or one string, not {_kind(raw)}")
    bad = [a for a in raw if not _scalar(a)]
    if bad:
        raise DataError(f"{where}: {key} must hold strings, not {_kind(bad[0])} ({bad[0]!r})")
    aliases = [str(a).strip() for a in raw if str(a).strip()]
    if not aliases:
        raise DataError(f"{where}: {key} is empty (at least one non-blank gold answer is needed)")
    return aliases


def _scalar(value: Any) -> bool:
    """A string, or a number written as an answer (``42``, ``2.5``); booleans are not answers."""
    return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    names |= {float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _jsonl_objects(path: Path, shown: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; lines split on ``\\n`` only, so a U+2028 inside a
    string stays in it."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"{shown}: cannot be read ({exc.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            try:  # a UTF-8 byte-order mark on the first line is allowed (some editors write one)
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{shown}:{number}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
                ) from None
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{shown}:{number}: not JSON ({exc.msg} at column {exc.colno})") from None


def _parquet_objects(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_table(path).to_pylist())
    except Exception as exc:  # pyarrow raises several types for an unreadable file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
