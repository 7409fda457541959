"""`routegraph bench recorded --train/--test` and `routegraph calibrate` in-process on small outcome files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from app import cli
from app.bench.data import load_queries, split, stratified
from app.cli import common

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data/routing_outcomes/train.jsonl"
POOL = ROOT / "pools/recorded_9llm.yaml"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ROUTEGRAPH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ROUTEGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(common.console, "width", 400)
    monkeypatch.setattr(common.err_console, "width", 400)


def invoke(*args: str) -> tuple[Result, str]:
    result = CliRunner().invoke(cli.app, list(args))
    return result, ANSI.sub("", result.output)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def rows() -> tuple[list[dict], list[dict]]:
    train, dev = split(load_queries(DATA))
    as_rows = [
        [{"id": q.id, "task": q.task, "question": q.question, "scores": q.scores} for q in part]
        for part in (stratified(train, 280), stratified(dev, 56))
    ]
    return as_rows[0], as_rows[1]


def test_train_and_test_files_give_a_leaderboard(tmp_path: Path, rows: tuple[list, list]) -> None:
    train, test = (
        _write(tmp_path / "mine-train.jsonl", rows[0]),
        _write(tmp_path / "mine-test.jsonl", rows[1]),
    )
    result, out = invoke(
        "bench", "recorded", "--train", str(train), "--test", str(test), "--pool", str(POOL),
        "--routers", "single,oracle,knn-emb", "--encoder", "hashing", "--modes", "in-mix,reweighted",
        "--out", str(tmp_path / "res"),
    )  # fmt: skip
    assert result.exit_code == 0, out
    report = (tmp_path / "res" / "recorded_routing.md").read_text()
    assert "56 dev queries" in report and "re-weighted (uniform task mix)" in report
    assert "| knn-emb |" in report


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"id": "a", "question": "q", "scores": {"x": 1}}\nnot json\n', r"bad\.jsonl:2: expected a JSON"),
        ('{"id": "a", "question": "q"}\n', r"bad\.jsonl:1: expected a JSON object.*KeyError"),
        ('{"id": "a", "question": "q", "scores": {"x": "high"}}\n', r"bad\.jsonl:1: .*ValueError"),
        ("\n\n", r"bad\.jsonl: no queries"),
    ],
)
def test_malformed_test_file_is_named_with_its_line(
    tmp_path: Path, rows: tuple[list, list], bad: str, message: str
) -> None:
    train = _write(tmp_path / "train.jsonl", rows[0])
    (tmp_path / "bad.jsonl").write_text(bad)
    result, out = invoke("bench", "recorded", "--train", str(train), "--test", str(tmp_path / "bad.jsonl"))
    assert result.exit_code == 2
    assert re.search(message, out), out


def test_missing_file_and_missing_scores_are_clear_errors(tmp_path: Path, rows: tuple[list, list]) -> None:
    train = _write(tmp_path / "train.jsonl", rows[0])
    result, out = invoke("bench", "recorded", "--train", str(train), "--test", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2 and "nope.jsonl: outcome file does not exist" in out
    partial = [
        dict(r, scores={k: v for k, v in r["scores"].items() if k != "gemma-2-9b-it"}) for r in rows[1]
    ]
    test = _write(tmp_path / "partial.jsonl", rows[1][:2] + partial[2:])
    result, out = invoke("bench", "recorded", "--train", str(train), "--test", str(test))
    assert result.exit_code == 2 and "partial.jsonl:3: no score for gemma-2-9b-it" in out


def test_data_and_train_together_or_test_alone_are_refused(tmp_path: Path, rows: tuple[list, list]) -> None:
    train = _write(tmp_path / "train.jsonl", rows[0])
    result, out = invoke(
        "bench", "recorded", "--data", str(DATA), "--train", str(train), "--test", str(train)
    )
    assert result.exit_code == 2 and "not both" in out
    result, out = invoke("bench", "recorded", "--test", str(train))
    assert result.exit_code == 2 and "--train" in out


def test_calibrate_writes_a_config_that_the_bench_loads(tmp_path: Path, rows: tuple[list, list]) -> None:
    train, test = _write(tmp_path / "train.jsonl", rows[0]), _write(tmp_path / "test.jsonl", rows[1])
    config = tmp_path / "knn.yaml"
    result, out = invoke(
        "calibrate", "--router", "knn-emb", "--target-price", "0.3", "--train", str(train),
        "--pool", str(POOL), "--encoder", "hashing", "--folds", "3", "--out", str(config),
    )  # fmt: skip
    assert result.exit_code == 0, out
    assert "knn-emb: λ =" in out and config.is_file()
    result, out = invoke(
        "bench", "recorded", "--train", str(train), "--test", str(test), "--pool", str(POOL),
        "--routers", "single,oracle", "--router-config", str(config), "--modes", "in-mix",
        "--out", str(tmp_path / "res"),
    )  # fmt: skip
    assert result.exit_code == 0, out
    report = (tmp_path / "res" / "recorded_routing.md").read_text()
    assert "| knn-emb@$0.3 |" in report
    assert re.search(
        r"target vs reached on the test queries\n\n.*\n.*\n\| knn-emb@\$0\.3 \| \$0\.\d+ \(", report
    )
    result, out = invoke("calibrate", "--router", "knn-emb", "--train", str(train), "--out", str(config))
    assert result.exit_code == 2 and "exactly one" in out
