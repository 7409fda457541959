"""The one QA-file reader: every bad file or line is an error naming the file and the line, whichever
command reads it (``eval --data``, training recipes, ``traces import-qa``); relative ``data/…`` paths work
from any directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app import cli
from app.config import PROJECT_ROOT
from app.evaluation import data
from app.evaluation.qa_file import DataError, read_qa_file
from training import data as training_data
from training.common import load_recipe
from training.grpo import GRPORecipe
from training.sft import SFTRecipe

OK = '{"question": "q", "answers": ["a"]}'


def write(tmp_path: Path, content: str | bytes, name: str = "qa.jsonl") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (OK + "\n{not json\n", r"qa\.jsonl:2: not JSON \(Expecting property name .* at column 2\)"),
        ('["question", "answers"]\n', r"qa\.jsonl:1: expected a JSON object .*, not a list"),
        ('"Paris"\n', r"qa\.jsonl:1: expected a JSON object .*, not a string"),
        (OK + "\n\n42\n", r"qa\.jsonl:3: expected a JSON object .*, not a number"),  # blank line 2 counted
        ('{"answers": ["a"]}\n', r"qa\.jsonl:1: missing question"),
        ('{"question": "  ", "answers": ["a"]}\n', r"qa\.jsonl:1: question is empty"),
        ('{"question": 7, "answers": ["a"]}\n', r"qa\.jsonl:1: question must be a string, not a number"),
        # JSON can spell a lone surrogate; UTF-8, and so the trace store, cannot hold one (found by fuzzing).
        ('{"question": "q\\ud800", "answers": ["a"]}\n', r"qa\.jsonl:1: question holds .*\\ud800"),
        ('{"question": "q", "answers": ["\\udfff"]}\n', r"qa\.jsonl:1: answers holds .*\\udfff"),
        (OK + '\n{"question": "q2"}\n', r"qa\.jsonl:2: missing answers"),
        ('{"question": "q", "answers": null}\n', r"qa\.jsonl:1: missing answers"),
        ('{"question": "q", "answers": []}\n', r"qa\.jsonl:1: answers is empty"),
        ('{"question": "q", "answers": ["", "  "]}\n', r"qa\.jsonl:1: answers is empty"),
        ('{"question": "q", "answers": ""}\n', r"qa\.jsonl:1: answers must be a list of strings"),
        # A bare string is not a list of aliases: neither split into letters nor guessed to be one alias.
        ('{"question": "Q2?", "answers": "bcd"}\n', r'qa\.jsonl:1: answers must be a list .*\["bcd"\]'),
        (
            '{"question": "q", "answers": {"a": 1}}\n',
            r"qa\.jsonl:1: answers must be a list .*, not an object",
        ),
        ('{"question": "q", "answers": true}\n', r"qa\.jsonl:1: answers must be a list .*, not a boolean"),
        ('{"question": "q", "answers": [["a"]]}\n', r"qa\.jsonl:1: answers must hold strings, not a list"),
        ('{"question": "q", "answers": ["a", null]}\n', r"qa\.jsonl:1: answers must hold strings, not null"),
        (
            '{"id": [1], "question": "q", "answers": ["a"]}\n',
            r"qa\.jsonl:1: id must be a string or an integer",
        ),
        (
            '{"id": "x", "question": "q", "answers": ["a"]}\n'
            + OK
            + '\n{"id": "x", "question": "r", "answers": ["b"]}\n',
            r"qa\.jsonl:3: id 'x' is already used \(.*qa\.jsonl:1\)",
        ),
        (OK + '\n{"id": 1, "question": "r", "answers": ["b"]}\n', r"qa\.jsonl:2: id '1' is already used"),
        (
            b'{"question": "caf\xe9", "answers": ["a"]}\n',
            r"qa\.jsonl:1: not UTF-8 \(byte 0xe9 at column 18\)",
        ),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=message):
        read_qa_file(path)


READERS: dict[str, Callable[[Path], Any]] = {
    "eval": lambda path: data.load_dataset(str(path)),
    "training": training_data.read_qa_file,
    "qa_file": read_qa_file,
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_command_reads_through_the_same_checks(tmp_path: Path, reader: str) -> None:
    path = write(tmp_path, OK + '\n{"question": "q2", "answers": 5.5e}\n')
    with pytest.raises(DataError, match=r"qa\.jsonl:2: not JSON"):
        READERS[reader](path)
    with pytest.raises(DataError, match=r"missing\.jsonl: no such file"):
        READERS[reader](tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="not a file"):
        READERS[reader](tmp_path)


def test_import_qa_names_the_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEGRAPH_DATABASE_URL", f"sqlite:///{tmp_path}/t.db")
    path = write(tmp_path, OK + '\n{"question": "q2", "answers": {"a": 3}}\n')
    result = CliRunner().invoke(cli.app, ["traces", "import-qa", str(path)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "qa.jsonl:2: answers must be a list of strings, not an object" in output


def test_good_rows_ids_and_answer_layouts(tmp_path: Path) -> None:
    rows = [
        {"question": "singular key", "answer": "Paris"},  # answer (not answers): one alias, not P, a, r, i, s
        {"id": "n", "question": "numbers", "answers": [1914, "nineteen fourteen", 2.5]},
        {"id": 70, "question": " padded ", "answers": [" a ", "", "b"]},  # blanks dropped, stripped
        {"query": "query key", "answer": "Sol… #### 42"},  # other layouts: GSM8K's answer
        {"question": "squad", "answers": {"text": ["x", "y"], "answer_start": [0, 3]}},
        {"question": "csqa", "answerKey": "B"},
        {"question": "a line\u2028separator inside", "answers": ["z"]},  # not a line break in JSONL
    ]
    path = write(tmp_path, "\ufeff" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    read = read_qa_file(path)
    assert [r.id for r in read] == ["1", "n", "70", "4", "5", "6", "7"]  # the line number when absent
    assert [r.answers for r in read] == [
        ["Paris"],
        ["1914", "nineteen fourteen", "2.5"],
        ["a", "b"],
        ["42"],
        ["x", "y"],
        ["B"],
        ["z"],
    ]
    questions = [r.question for r in read]
    assert questions[2:] == ["padded", "query key", "squad", "csqa", "a line\u2028separator inside"]
    assert read[0].where == f"{path}:1" and read[0].raw == rows[0]


def test_relative_data_paths_work_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no data/ here: the recipes' paths resolve in the project
    grpo = load_recipe(GRPORecipe, PROJECT_ROOT / "training/recipes/grpo_cpu_smoke.yaml")
    sft = load_recipe(SFTRecipe, PROJECT_ROOT / "training/recipes/sft.yaml")
    assert not Path(grpo.data).is_absolute() and not (tmp_path / grpo.data).exists()
    assert len(training_data.read_qa_file(grpo.data, limit=3)) == 3
    assert len(training_data.read_qa_file(sft.data.removeprefix("synthetic:"), limit=3)) == 3
    nq = data.load_dataset("data/nq_open_dev300.jsonl", limit=2)
    assert nq.name == "nq_open_dev300" and [i.id for i in nq.items] == ["nq-test-0", "nq-test-17"]
    # A file of that name in the working directory comes first.
    (tmp_path / "data").mkdir()
    write(tmp_path / "data", '{"id": "mine", "question": "q", "answers": ["a"]}\n', "nq_open_dev300.jsonl")
    assert [r.id for r in read_qa_file("data/nq_open_dev300.jsonl")] == ["mine"]
    with pytest.raises(DataError, match=r"data/none\.jsonl: no such file \(looked in .* and in the project"):
        read_qa_file("data/none.jsonl")


def test_every_shipped_sample_reads_cleanly() -> None:
    for name in data.SHORT_NAMES:
        assert data.load_dataset(name).items, name


def test_hf_offline_flags_are_restored_and_the_environment_untouched() -> None:
    import os

    import datasets
    from huggingface_hub import constants

    before = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    with pytest.raises(DataError, match="local Hugging Face cache"):
        data.load_dataset("hf:routegraph-test/surely-not-cached")
    assert (
        datasets.config.HF_HUB_OFFLINE,
        constants.HF_HUB_OFFLINE,
        os.environ.get("HF_HUB_OFFLINE"),
    ) == before
