"""`routegraph traces export | import-qa | prune | size`: in-process, on a SQLite file under tmp_path."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from app import cli
from app.cli import common
from app.config import DEFAULT_POOL
from app.pool import load_pool
from storage import datasets, db, maintenance
from storage.models import utcnow
from training import data as training_data

Factory = Any
TRAJECTORY = (
    "<think> A fact. </think>\n<search> Qwen: capital of France? </search>\n"
    "<information> Paris </information>\n<answer> Paris </answer>"
)


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rich wraps at 80 columns off a terminal: widen so that paths and messages stay whole.
    monkeypatch.setattr(common.console, "width", 400)
    monkeypatch.setattr(common.err_console, "width", 400)


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "traces.db"
    monkeypatch.setenv("ROUTEGRAPH_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("ROUTEGRAPH_POOL_FILE", str(DEFAULT_POOL))
    return path


@pytest.fixture
def factory(db_path: Path) -> Any:
    engine = db.make_engine(f"sqlite:///{db_path}")
    yield db.session_factory(engine)
    engine.dispose()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


def finished(
    factory: Factory, question: str, answer: str, *, days_old: int = 0, graph: str = "router-r1"
) -> int:
    run_id = db.create_run(
        factory, question=question, graph=graph, created_at=utcnow() - timedelta(days=days_old)
    )
    db.add_hop(factory, run_id, 0, node="think", model="Router", cost=1e-6)
    db.finish_run(factory, run_id, status="ok", answer=answer, error=None, trajectory=TRAJECTORY)
    return run_id


def fill(factory: Factory) -> dict[str, int]:
    ids = {
        "gold": finished(factory, "What is the capital of France?", "Paris"),
        "correct": finished(factory, "2+2?", "4"),
        "wrong": finished(factory, "Largest planet?", "Mars"),
        "unlabelled": finished(factory, "Who wrote Hamlet?", "Shakespeare"),
        "r2": finished(factory, "Capital of Spain?", "Madrid", graph="r2-reasoner"),
    }
    db.add_feedback(factory, ids["gold"], "gold", gold_answer="Paris")
    db.add_feedback(factory, ids["correct"], "correct")
    db.add_feedback(factory, ids["wrong"], "gold", gold_answer="Jupiter")
    return ids


# -- export --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_grpo_export_loads_with_datasets_and_has_trl_columns(
    factory: Factory, tmp_path: Path, fmt: str
) -> None:
    from datasets import load_dataset

    ids = fill(factory)
    out = tmp_path / f"grpo.{fmt}"
    result = invoke(
        "traces", "export", "--graph", "router-r1", "--labelled-only", "--format", fmt, "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    loaded = load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(out), split="train")
    assert {"prompt", "answers"} <= set(loaded.column_names)  # GRPOTrainer: prompt; rewards get answers
    by_run = {row["run_id"]: row for row in loaded}
    assert set(by_run) == {ids["gold"], ids["correct"], ids["wrong"]}
    assert by_run[ids["gold"]]["answers"] == ["Paris"]
    assert by_run[ids["correct"]]["answers"] == ["4"]
    prompt = by_run[ids["gold"]]["prompt"]
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert "What is the capital of France?" in prompt[1]["content"]
    assert prompt == training_data.router_prompt(
        "What is the capital of France?", load_pool(DEFAULT_POOL).models
    )


def test_sft_export_keeps_labelled_runs_answered_right(factory: Factory, tmp_path: Path) -> None:
    from datasets import load_dataset

    ids = fill(factory)
    out = tmp_path / "sft.jsonl"
    result = invoke("traces", "export", "--kind", "sft", "--labelled-only", "--out", str(out))
    assert result.exit_code == 0, result.output
    loaded = load_dataset("json", data_files=str(out), split="train")
    assert {"prompt", "completion"} <= set(loaded.column_names)  # SFTTrainer's prompt-completion format
    assert sorted(loaded["run_id"]) == [ids["gold"], ids["correct"]]  # not "wrong", nor the unlabelled
    row = loaded[0]
    assert row["completion"] == [{"role": "assistant", "content": TRAJECTORY}]
    assert row["prompt"][0]["role"] == "system"
    # Without --labelled-only every finished run with a trajectory is exported.
    everything = invoke("traces", "export", "--kind", "sft", "--force", "--out", str(out))
    assert everything.exit_code == 0, everything.output
    assert len(out.read_text().splitlines()) == len(ids)


def test_export_since_filters_by_day(factory: Factory, tmp_path: Path) -> None:
    finished(factory, "old question", "x", days_old=30)
    new = finished(factory, "new question", "y")
    out = tmp_path / "rows.jsonl"
    since = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%d")
    assert invoke("traces", "export", "--since", since, "--out", str(out)).exit_code == 0
    assert [json.loads(line)["run_id"] for line in out.read_text().splitlines()] == [new]
    bad = invoke("traces", "export", "--since", "yesterday", "--out", str(out))
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("which", ["database", "wal", "shm", "symlink"])
def test_export_never_overwrites_the_store(
    factory: Factory, db_path: Path, tmp_path: Path, fmt: str, force: bool, which: str
) -> None:
    fill(factory)
    targets = {"database": db_path, "wal": Path(f"{db_path}-wal"), "shm": Path(f"{db_path}-shm")}
    targets["symlink"] = tmp_path / "link.jsonl"
    targets["symlink"].symlink_to(db_path)
    out = targets[which]
    before = {p: p.read_bytes() for p in targets.values() if p.exists()}
    result = invoke("traces", "export", "--format", fmt, "--out", str(out), *(["--force"] if force else []))
    assert result.exit_code == 1, result.output
    assert "trace store" in result.output and "Traceback" not in result.output
    assert {p: p.read_bytes() for p in targets.values() if p.exists()} == before
    assert len(db.list_runs(factory)) == 5  # the store still reads


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_replaces_an_existing_file_only_with_force(factory: Factory, tmp_path: Path, fmt: str) -> None:
    fill(factory)
    out = tmp_path / f"rows.{fmt}"
    out.write_text("someone's notes\n")
    refused = invoke("traces", "export", "--format", fmt, "--out", str(out))
    assert refused.exit_code == 1 and "--force" in refused.output
    assert out.read_text() == "someone's notes\n"
    replaced = invoke("traces", "export", "--format", fmt, "--force", "--out", str(out))
    assert replaced.exit_code == 0, replaced.output
    assert out.read_bytes() != b"someone's notes\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


@pytest.mark.parametrize(
    ("out", "reason"),
    [
        (".", "is a directory"),
        ("missing/rows.jsonl", "does not exist"),
        ("notes.txt/rows.jsonl", "is not a directory"),
    ],
)
def test_export_to_an_unusable_path_is_one_line(
    factory: Factory, tmp_path: Path, out: str, reason: str
) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    result = invoke("traces", "export", "--out", str(tmp_path / out))
    assert result.exit_code == 1, result.output
    assert reason in result.output and "Traceback" not in result.output
    assert not (tmp_path / "missing").exists()


def test_a_failed_export_leaves_the_old_file_and_no_partial_one(tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    out.write_text("the previous export\n")
    rows: list[dict[str, Any]] = [{"run_id": 1}, {"run_id": 2, "bad": object()}]  # not JSON: fails midway
    with pytest.raises(TypeError):
        training_data.write(rows, out, "jsonl", force=True)
    assert out.read_text() == "the previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_export_load_gives_a_dataset(factory: Factory) -> None:
    fill(factory)
    dataset = training_data.load(factory, load_pool(DEFAULT_POOL), "grpo", graph="router-r1")
    assert len(dataset) == 3 and {"prompt", "answers", "models"} <= set(dataset.column_names)


# -- import-qa ----------------------------------------------------------------------------------------------
def test_import_qa_attaches_to_runs_and_adds_pending_questions(factory: Factory, tmp_path: Path) -> None:
    asked = finished(factory, "What is the capital of France?", "Paris")
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"question": "What is the capital of France?", "answers": ["Paris", "paris, France"]})
        + "\n\n"
        + json.dumps({"question": "Who painted the Mona Lisa?", "answers": ["Leonardo da Vinci"]})
        + "\n"
    )
    result = invoke("traces", "import-qa", str(qa))
    assert result.exit_code == 0, result.output
    assert "1 attached" in result.output and "1 pending" in result.output
    feedback = db.feedback_for(factory, asked)
    assert [(f.label, f.gold_answer, f.gold_aliases, f.source) for f in feedback] == [
        ("gold", "Paris", ["Paris", "paris, France"], "dataset")
    ]
    pending = [r for r in datasets.records(factory) if r["status"] == "pending"]
    assert [(r["question"], r["answers"]) for r in pending] == [
        ("Who painted the Mona Lisa?", ["Leonardo da Vinci"])
    ]
    # Training sees the aliases; a second import changes nothing.
    rows, run_ids = training_data.grpo_rows_from_runs(factory, load_pool(DEFAULT_POOL))
    assert rows[run_ids.index(asked)]["answers"] == ["Paris", "paris, France"]
    again = invoke("traces", "import-qa", str(qa))
    assert again.exit_code == 0 and "2 already imported" in again.output
    assert len(db.feedback_for(factory, asked)) == 1


def test_import_qa_reports_a_bad_line(factory: Factory, tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "q"}\n')
    result = invoke("traces", "import-qa", str(qa))
    assert result.exit_code == 1 and "qa.jsonl:1" in result.output


def test_import_qa_imports_the_valid_lines_and_names_each_rejected_one(
    factory: Factory, tmp_path: Path
) -> None:
    qa = tmp_path / "qa.jsonl"
    lines = [
        b'{"question": "Q1?", "answers": ["a"]}',
        b'{"question": "Q2?", "answers": "bcd"}',  # a bare string: rejected, never split into b, c, d
        b'{"question": "", "answers": ["x"]}',
        b"{not json",
        b'{"question": "caf\xe9?", "answers": ["latin-1"]}',
        b'{"question": "Q6?", "answers": ["f", "F"]}',
    ]
    qa.write_bytes(b"\n".join(lines) + b"\n")
    before = qa.read_bytes()
    result = invoke("traces", "import-qa", str(qa))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "imported 2, rejected 4" in result.output
    for number, reason in [(2, "answers must be a list"), (3, "question is empty"), (4, "not JSON")]:
        assert f"qa.jsonl:{number}: {reason}" in result.output
    assert "qa.jsonl:5: not UTF-8" in result.output
    stored = {r["question"]: r["answers"] for r in datasets.records(factory)}
    assert stored == {"Q1?": ["a"], "Q6?": ["f", "F"]}
    assert qa.read_bytes() == before


def test_import_qa_without_a_valid_line_writes_nothing(factory: Factory, tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "Q2?", "answers": "bcd"}\n{"question": " ", "answers": ["x"]}\n')
    result = invoke("traces", "import-qa", str(qa))
    assert result.exit_code == 1, result.output
    assert "imported 0, rejected 2" in result.output and "nothing was written" in result.output
    assert "qa.jsonl:2: question is empty" in result.output
    assert db.list_runs(factory) == []


def test_import_qa_refuses_an_unknown_graph_before_reading(factory: Factory, tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "Q1?", "answers": ["a"]}\n')
    result = invoke("traces", "import-qa", str(qa), "--graph", "nope")
    assert result.exit_code == 2, result.output
    assert "nope" in result.output and "router-r1, r2-reasoner" in result.output
    assert db.list_runs(factory) == []


def test_storing_qa_rows_never_splits_a_string_into_letters(factory: Factory) -> None:
    with pytest.raises(ValueError, match="list of strings"):
        datasets.import_qa(factory, [{"question": "Q2?", "answers": "bcd"}])
    assert db.list_runs(factory) == []


# -- prune and size ------------------------------------------------------------------------------------------
def test_prune_keeps_labelled_runs_when_asked(factory: Factory) -> None:
    old_gold = finished(factory, "old gold", "a", days_old=200)
    db.add_feedback(factory, old_gold, "gold", gold_answer="a")
    old_wrong = finished(factory, "old wrong", "b", days_old=200)
    db.add_feedback(factory, old_wrong, "incorrect")
    old_plain = finished(factory, "old plain", "c", days_old=100)
    recent = finished(factory, "recent", "d", days_old=10)
    old_running = db.create_run(
        factory, question="still running", graph="router-r1", created_at=utcnow() - timedelta(days=365)
    )

    result = invoke("traces", "prune", "--older-than", "90d", "--keep-labelled")
    assert result.exit_code == 0, result.output
    assert "deleted 2 runs" in result.output
    remaining = {run.id for run in db.list_runs(factory)}
    assert remaining == {old_gold, recent, old_running}
    assert db.feedback_for(factory, old_wrong) == []
    assert db.hop_sums(factory, old_plain) == (0.0, 0, 0)  # hops went with their run

    assert invoke("traces", "prune", "--older-than", "90d").exit_code == 0
    assert {run.id for run in db.list_runs(factory)} == {recent, old_running}
    assert maintenance.prune(factory, utcnow()) == 1  # the running one is never pruned
    bad = invoke("traces", "prune", "--older-than", "ninety days")
    assert bad.exit_code == 2 and "90d" in bad.output


def test_size_reports_rows_and_file_size(factory: Factory, db_path: Path) -> None:
    fill(factory)
    result = invoke("traces", "size", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["database"] == str(db_path) and report["bytes"] >= db_path.stat().st_size > 0
    assert report["rows"]["runs"] == 5 and report["rows"]["hops"] == 5 and report["rows"]["feedback"] == 3
    table = invoke("traces", "size")
    assert table.exit_code == 0 and "runs" in table.output


def test_store_commands_name_a_file_that_is_not_a_database(db_path: Path, tmp_path: Path) -> None:
    db_path.write_bytes(b"not a database at all\n")
    for args in (
        ("traces", "size"),
        ("traces", "prune", "--older-than", "1d"),
        ("traces", "export", "--out", str(tmp_path / "x.jsonl")),
    ):
        result = invoke(*args)
        assert result.exit_code == 1 and str(db_path) in result.output.replace("\n", ""), args
    assert db_path.read_bytes() == b"not a database at all\n"
