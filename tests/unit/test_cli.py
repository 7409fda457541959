"""The `routegraph` CLI in-process, against a pool whose endpoints are all dead: no servers, no network."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from app import cli
from app.cli import common
from app.config import DEFAULT_POOL
from app.pool import load_pool, local_servers

DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
ROUTER = "Dead-Router"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def dead_entry(name: str, price_in: float, price_out: float) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "base_url": DEAD_URL,
        "price_in": price_in,
        "price_out": price_out,
        "descriptor": f"{name}, an endpoint nobody serves.",
    }


@pytest.fixture
def pool_file(tmp_path: Path) -> Path:
    path = tmp_path / "dead-pool.yaml"
    pool = {
        "router": dead_entry(ROUTER, 0.05, 0.10),
        "models": [dead_entry("Dead-Small", 0.1, 0.2), dead_entry("Dead-Big", 1.0, 2.0)],
    }
    path.write_text(yaml.safe_dump(pool, sort_keys=False))
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "traces.db"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pool_file: Path, db_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ROUTEGRAPH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ROUTEGRAPH_POOL_FILE", str(pool_file))
    monkeypatch.setenv("ROUTEGRAPH_DATABASE_URL", f"sqlite:///{db_path}")
    monkeypatch.setenv("ROUTEGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ROUTEGRAPH_REQUEST_TIMEOUT_S", "2")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    # Rich wraps and truncates at 80 columns off a terminal: widen so paths and messages stay whole.
    monkeypatch.setattr(common.console, "width", 400)
    monkeypatch.setattr(common.err_console, "width", 400)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


def text(result: Result) -> str:
    """stdout and stderr together, without any colour codes."""
    return ANSI.sub("", result.output)


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0, text(result)
    for command in ("ask", "traces", "models"):
        assert re.search(rf"^\W*{command}\b", text(result), re.MULTILINE), text(result)
    traces = invoke("traces", "--help")
    assert traces.exit_code == 0
    assert "list" in text(traces) and "show" in text(traces)


def test_no_arguments_shows_help() -> None:
    result = invoke()
    assert "ask" in text(result) and "Usage" in text(result)


@pytest.mark.parametrize("question", ["  ", ""])
def test_ask_empty_question(question: str, db_path: Path) -> None:
    result = invoke("ask", question)
    assert result.exit_code == 2, text(result)
    assert "empty" in text(result)
    assert "Traceback" not in text(result)
    listed = invoke("traces", "list")
    assert listed.exit_code == 0
    assert "router-r1" not in text(listed)  # no run was stored


def test_ask_json_against_a_dead_router_fails_and_stores_the_run() -> None:
    question = "What does [/INST] mean in [bold] prompts?"
    result = invoke("ask", "--json", question)
    assert result.exit_code == 1, text(result)
    data = json.loads(result.stdout)
    assert data["status"] == "failed"
    assert ROUTER in data["error"] and "endpoint failed" in data["error"]
    assert "cannot connect" in data["error"]
    assert data["answer"] == "" and data["hops"] == [] and data["total_cost"] == 0.0
    run_id = data["run_id"]

    listed = invoke("traces", "list")
    assert listed.exit_code == 0, text(listed)
    row = next(line for line in text(listed).splitlines() if re.search(rf"^\W*{run_id}\b", line))
    assert "failed" in row and "router-r1" in row and "[/INST]" in row

    failed_only = invoke("traces", "list", "--status", "ok")
    assert failed_only.exit_code == 0 and "[/INST]" not in text(failed_only)

    shown = invoke("traces", "show", str(run_id))
    assert shown.exit_code == 0, text(shown)
    assert f"question: {question}" in text(shown)
    assert ROUTER in text(shown) and "failed" in text(shown)
    assert "cannot connect" in text(shown)


def test_ask_without_json_reports_the_failure() -> None:
    result = invoke("ask", "Capital of France?", "--budget", "0.001", "--max-turns", "2")
    assert result.exit_code == 1, text(result)
    assert "status failed" in text(result)
    assert ROUTER in text(result) and "cannot connect" in text(result)


def test_ask_refuses_a_non_positive_budget() -> None:
    result = invoke("ask", "Capital of France?", "--budget", "0")
    assert result.exit_code == 2, text(result)
    assert "budget" in text(result)


def test_ask_unknown_graph() -> None:
    result = invoke("ask", "Capital of France?", "--graph", "r3")
    assert result.exit_code == 2, text(result)
    assert "unknown graph" in text(result)


def test_traces_show_unknown_run() -> None:
    result = invoke("traces", "show", "999")
    assert result.exit_code == 1
    assert "no run" in text(result)
    assert "Traceback" not in text(result)


@pytest.mark.parametrize(
    "content",
    ["router: [unclosed\nmodels: {\n", "router: {name: R}\nmodels: []\n", "- just\n- a list\n"],
    ids=["bad-yaml", "invalid", "not-a-mapping"],
)
def test_corrupt_pool_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str) -> None:
    bad = tmp_path / "broken-pool.yaml"
    bad.write_text(content)
    monkeypatch.setenv("ROUTEGRAPH_POOL_FILE", str(bad))
    for args in (["ask", "Capital of France?"], ["models"], ["ask", "--pool", str(bad), "q"]):
        result = invoke(*args)
        assert result.exit_code == 1, (args, text(result))
        assert "broken-pool.yaml" in text(result), (args, text(result))
        assert "Traceback" not in text(result)


def test_missing_pool_file(tmp_path: Path) -> None:
    result = invoke("ask", "--pool", str(tmp_path / "nowhere.yaml"), "q")
    assert result.exit_code == 1
    assert "nowhere.yaml" in text(result) and "does not exist" in text(result)


@pytest.mark.parametrize("args", [["traces", "list"], ["traces", "show", "1"], ["ask", "q"]])
def test_non_database_file_as_the_store(db_path: Path, args: list[str]) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_text("these are my notes, not a database\n")
    before = db_path.read_bytes()
    result = invoke(*args)
    assert result.exit_code == 1, text(result)
    assert str(db_path) in text(result)
    assert "Traceback" not in text(result)
    assert db_path.read_bytes() == before


def test_invalid_setting_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEGRAPH_REQUEST_TIMEOUT_S", "-1")
    result = invoke("traces", "list")
    assert result.exit_code == 2
    assert "configuration error" in text(result) and "request_timeout_s" in text(result)


def test_models_lists_the_embedded_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTEGRAPH_POOL_FILE")
    # Locating weights is tested elsewhere; here it must not assemble 250 MB of Gemma into ~/.cache.
    monkeypatch.setattr(local_servers, "gguf_path", lambda spec, data_dir=None: Path(f"/weights/{spec}.gguf"))
    result = invoke("models")
    assert result.exit_code == 0, text(result)
    output = text(result)
    pool = load_pool(DEFAULT_POOL)
    for entry in pool.all_entries():
        assert entry.name in output
        assert f"/weights/{entry.gguf}.gguf" in output
    assert "weights ready" in output and "llamacpp" in output
    assert "local.yaml" in output
    # The embedded weights table: every file, its licence, and that the Qwen ones still need `prepare`.
    for name in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "smollm2-135m", "gemma3-270m"):
        assert name in output
    assert "Gemma Terms of Use" in output and "Apache-2.0" in output
    assert output.count("not prepared: run `routegraph prepare`") == 2


def test_models_reports_missing_weights_and_dead_endpoints(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pool = {
        "router": dead_entry(ROUTER, 0.05, 0.10),
        "models": [
            {**dead_entry("Local-LM", 0.1, 0.2), "backend": "llamacpp", "gguf": str(tmp_path / "no.gguf")},
            {**dead_entry("Gpu-LM", 1.0, 2.0), "backend": "vllm", "hf_model": "org/gpu-lm"},
        ],
    }
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(pool))
    result = invoke("models", "--pool", str(path))
    assert result.exit_code == 0, text(result)
    output = text(result)
    assert "unreachable" in output  # the dead router
    assert "missing" in output and "no.gguf" in output
    assert "org/gpu-lm" in output and "gpu extra" in output


def test_traces_show_prints_stored_texts_verbatim(db_path: Path) -> None:
    # Model output is shown as written: brackets in it are text, never Rich markup.
    from storage import db

    engine = db.make_engine(f"sqlite:///{db_path}")
    factory = db.session_factory(engine)
    run_id = db.create_run(factory, question="Say [red]hi[/red]", graph="router-r1", router_model=ROUTER)
    db.add_hop(
        factory, run_id, 0, node="think", model=ROUTER, router_text="<search> Dead-Small: [/x] </search>"
    )
    db.add_hop(
        factory,
        run_id,
        1,
        node="route",
        model="Dead-Small",
        sub_query="what is [b]?",
        response="[/b] closes it",
        error="odd [/reply]",
        cost=1e-6,
    )
    db.finish_run(factory, run_id, status="ok", answer="[italic]hi", error=None)
    engine.dispose()

    result = invoke("traces", "show", str(run_id))
    assert result.exit_code == 0, text(result)
    output = text(result)
    for shown in (
        "question: Say [red]hi[/red]",
        "answer:   [italic]hi",
        "<search> Dead-Small: [/x] </search>",
        "← what is [b]?",
        "[/b] closes it",
        "odd [/reply]",
    ):
        assert shown in output, shown


def test_traces_resume_refusals_and_a_failed_resume(db_path: Path) -> None:
    from storage import db

    unknown = invoke("traces", "resume", "4242")
    assert unknown.exit_code == 1 and "no run with id 4242" in text(unknown)

    failed = invoke("ask", "--json", "Capital of France?")
    assert failed.exit_code == 1
    run_id = json.loads(failed.stdout)["run_id"]
    # The router is still down: the resumed run fails again, on the same row, and stays resumable.
    again = invoke("traces", "resume", "--json", str(run_id))
    assert again.exit_code == 1, text(again)
    data = json.loads(again.stdout)
    assert (data["run_id"], data["status"]) == (run_id, "failed") and "cannot connect" in data["error"]
    listed = invoke("traces", "list", "--status", "failed")
    assert text(listed).count("router-r1") == 1

    factory = db.session_factory(db.make_engine(f"sqlite:///{db_path}"))
    finished = db.create_run(factory, question="q", graph="router-r1")
    db.finish_run(factory, finished, status="ok", answer="a", error=None)
    done = invoke("traces", "resume", str(finished))
    assert done.exit_code == 1 and "already finished" in text(done) and "Traceback" not in text(done)


def test_prepare_fetches_verifies_and_lists_chunked_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from app.pool import weights
    from tests.unit.test_weights import build_wheels, make_spec

    spec = make_spec()
    monkeypatch.setitem(weights.CATALOG, spec.name, spec)
    build_wheels(tmp_path / "wheelhouse")
    args = ("prepare", "--model", spec.name, "--find-links", str(tmp_path / "wheelhouse"))
    first = invoke(*args)
    assert first.exit_code == 0, text(first)
    assert "tiny-test: assembled" in text(first)
    assert (tmp_path / "data" / "models" / "tiny-test.gguf").is_file()
    again = invoke(*args)
    assert again.exit_code == 0 and "tiny-test: present" in text(again)

    monkeypatch.setattr(local_servers, "gguf_path", lambda spec, data_dir=None: Path(f"/w/{spec}.gguf"))
    listed = text(invoke("models"))
    row = next(line for line in listed.splitlines() if "tiny-test" in line)
    assert spec.sha256 in row and "prepared, verified" in row and "Apache-2.0" in row
    assert str(tmp_path / "data" / "models" / "tiny-test.gguf") in row


def test_prepare_fails_closed_with_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.pool import weights
    from tests.unit.test_weights import build_wheels, make_spec

    spec = make_spec(sha256="0" * 64)
    monkeypatch.setitem(weights.CATALOG, spec.name, spec)
    build_wheels(tmp_path / "wheelhouse")
    result = invoke("prepare", "--model", spec.name, "--find-links", str(tmp_path / "wheelhouse"))
    assert result.exit_code == 1
    assert "tiny-test: sha256 failed: expected 0000" in text(result)
    assert not (tmp_path / "data" / "models" / "tiny-test.gguf").exists()
    unknown = invoke("prepare", "--model", "no-such-model")
    assert unknown.exit_code == 2 and "unknown model" in text(unknown)
