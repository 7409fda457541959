"""Read a QA file (JSONL or Parquet: ``question``, ``answers``) into checked rows; errors name file and line.

The one reader of users' QA data: evaluation (``routegraph eval --data``), training (recipes' ``data``) and
``routegraph traces import-qa`` all go through :func:`read_qa_file`, so a file either works everywhere or
fails everywhere with the same message, e.g. ``qa.jsonl:7: answers must be a list of strings or one
string, not a dict``.

Row format: ``question`` (a non-empty string), ``answers`` (a non-empty list of gold aliases: strings, or
numbers taken as written; blank aliases are dropped; a bare string is refused rather than guessed to be
one alias, and never split into letters), optional ``id`` (string or integer; the line number when
absent). Layouts of common datasets are read too: ``query`` for the question, the singular ``answer`` or
``answerKey`` (one string is one alias there), SQuAD's ``{"text": [...]}`` and GSM8K's ``… #### 42``.

:func:`read_qa_file` takes a file whole or not at all (evaluation, training); :func:`scan_qa_file` checks
every line and returns the good rows with the rejected lines and why (``traces import-qa``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import PROJECT_ROOT


class DataError(ValueError):
    """The dataset cannot be found or read, or a row is not a usable QA item (the message says where)."""


class RowError(DataError):
    """One row (a line of a JSONL file) is not a usable QA item; the others may be."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


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


@dataclass(frozen=True)
class QAScan:
    """A QA file checked line by line: the usable rows, and each rejected line with its reason."""

    rows: list[QARow]
    rejected: list[RowError]


def read_qa_file(path: str | Path) -> list[QARow]:
    """Every row of a ``.jsonl`` or ``.parquet`` QA file, checked, ids unique (blank lines skipped); the
    first bad row is a :class:`DataError` naming file and line."""
    scan = scan_qa_file(path)
    if scan.rejected:
        raise scan.rejected[0]
    return scan.rows


def scan_qa_file(path: str | Path) -> QAScan:
    """Every line of a QA file checked on its own: a bad line is rejected, the others kept.

    A file that cannot be found or read at all is still a :class:`DataError`.
    """
    found = resolve_path(path)
    if found.suffix == ".parquet":
        objects: Iterable[tuple[str, int, Any]] = (
            (f"{path}: row {n}", n, obj) for n, obj in enumerate(_parquet_objects(found), 1)
        )
    else:
        objects = ((f"{path}:{n}", n, obj) for n, obj in _jsonl_objects(found, str(path)))
    rows: list[QARow] = []
    rejected: list[RowError] = []
    seen: dict[str, str] = {}
    for where, number, obj in objects:
        try:
            if isinstance(obj, RowError):
                raise obj
            row = qa_row(obj, where, number)
            _check_unique(row, seen)
        except RowError as exc:
            rejected.append(exc)
            continue
        rows.append(row)
    return QAScan(rows, rejected)


def qa_row(obj: Any, where: str, default_id: int | str) -> QARow:
    """One object checked as a QA item; a :class:`RowError` says where and why it is not one."""
    if not isinstance(obj, dict):
        raise RowError(where, f"expected a JSON object with question and answers, not {_kind(obj)}")
    question = obj.get("question", obj.get("query"))
    if question is None:
        raise RowError(where, "missing question")
    if not isinstance(question, str):
        raise RowError(where, f"question must be a string, not {_kind(question)}")
    if not question.strip():
        raise RowError(where, "question is empty")
    _check_storable(question, "question", where)
    raw_id = obj.get("id")
    if raw_id is None:
        raw_id = default_id
    elif isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise RowError(where, f"id must be a string or an integer, not {_kind(raw_id)}")
    return QARow(str(raw_id), question.strip(), _answers(obj, where), obj, where)


def unique_ids(rows: Iterable[QARow]) -> list[QARow]:
    """The rows, or an error naming a repeated id and where it was first used."""
    seen: dict[str, str] = {}
    out = []
    for row in rows:
        _check_unique(row, seen)
        out.append(row)
    return out


def _check_unique(row: QARow, seen: dict[str, str]) -> None:
    if row.id in seen:
        raise RowError(row.where, f"id {row.id!r} is already used ({seen[row.id]})")
    seen[row.id] = row.where


def _answers(obj: dict[str, Any], where: str) -> list[str]:
    key = next((k for k in ("answers", "answer", "answerKey") if obj.get(k) is not None), None)
    if key is None:
        raise RowError(where, "missing answers")
    raw = obj[key]
    if isinstance(raw, dict) and "text" in raw:  # SQuAD's {"text": [...], "answer_start": [...]}
        raw = raw["text"]
    if key == "answers" and not isinstance(raw, list):
        # A bare string here is ambiguous (one alias? a list that lost its brackets?): gold labels are not
        # guessed, and a string is never iterated into its letters.
        example = f" (write [{json.dumps(raw, ensure_ascii=False)}] for one answer)" if _scalar(raw) else ""
        raise RowError(where, f"answers must be a list of strings{example}, not {_kind(raw)}")
    if isinstance(raw, str) and "####" in raw:  # GSM8K: the worked solution, then "#### 42"
        raw = raw.rsplit("####", 1)[-1]
    if _scalar(raw):
        raw = [raw]  # the singular answer / answerKey of other layouts: one alias
    if not isinstance(raw, list):
        raise RowError(where, f"{key} must be a list of strings or one string, not {_kind(raw)}")
    bad = [a for a in raw if not _scalar(a)]
    if bad:
        raise RowError(where, f"{key} must hold strings, not {_kind(bad[0])} ({bad[0]!r})")
    aliases = [str(a).strip() for a in raw if str(a).strip()]
    if not aliases:
        raise RowError(where, f"{key} is empty (at least one non-blank gold answer is needed)")
    for alias in aliases:
        _check_storable(alias, key, where)
    return aliases


def _check_storable(text: str, field: str, where: str) -> None:
    """JSON can spell an unpaired surrogate (``"\\ud800"``); UTF-8, and so every database, cannot store it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        character = f"\\u{ord(text[exc.start]):04x}"
        raise RowError(where, f"{field} holds an unpaired surrogate ({character}): not text") from None


def _scalar(value: Any) -> bool:
    """A string, or a number written as an answer (``42``, ``2.5``); booleans, NaN and infinities are not."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    names |= {float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _jsonl_objects(path: Path, shown: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value, or the RowError saying why the line is not JSON) for each non-blank
    line; lines split on ``\\n`` only, so a U+2028 inside a string stays in it."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"{shown}: cannot be read ({exc.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            where = f"{shown}:{number}"
            try:  # a UTF-8 byte-order mark on the first line is allowed (some editors write one)
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                reason = f"not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
                yield number, RowError(where, reason)
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, RowError(where, f"not JSON ({exc.msg} at column {exc.colno})")
            except (ValueError, RecursionError) as exc:  # a 5,000-digit number; [[[[… nested too deeply
                yield number, RowError(where, f"not usable JSON ({type(exc).__name__}: {exc})")
            else:
                yield number, value


def _parquet_objects(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_table(path).to_pylist())
    except Exception as exc:  # pyarrow raises several types for an unreadable file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
