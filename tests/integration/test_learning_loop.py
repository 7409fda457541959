"""The learning loop end to end on the tiny embedded pool (training/recipes/loop_smoke.yaml, a tmp store):
runs stored, the training run linked to them, the checkpoint exported to GGUF and served, the report
written."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT, load_settings
from app.service import RouteGraphService
from storage import db
from training import loop
from training.loop_data import load_slice, parse_slice

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECIPE = PROJECT_ROOT / "training" / "recipes" / "loop_smoke.yaml"


@pytest.mark.timeout(900)
def test_the_loop_stores_runs_trains_from_them_exports_serves_and_reports(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'traces.db'}"
    report = tmp_path / "learning_loop.md"
    started = time.perf_counter()
    summary = loop.main(
        str(RECIPE),
        {"database_url": database_url, "output_dir": str(tmp_path / "loop"), "report": str(report)},
    )
    print(f"loop_smoke: {time.perf_counter() - started:.0f} s")
    factory = db.session_factory(db.make_engine(database_url))
    runs = {run.id: run for run in db.list_runs(factory, limit=10_000)}
    train = {i.prompt for i in load_slice(parse_slice("csqa[75:79]")).items}
    held_out = {i.prompt for i in load_slice(parse_slice("csqa[20:22]")).items}

    # Runs stored: each pool model answered every train and held-out question once, with its gold answer.
    graphs = Counter(run.graph for run in runs.values())
    assert graphs["single:SmolLM2-135M-Instruct"] == graphs["single:Gemma-3-270M"] == 6
    assert {r.question for r in runs.values() if r.graph.startswith("single:")} == train | held_out
    assert all(db.has_gold_answer(factory, run_id) for run_id in runs)

    # The training runs are linked to the stored runs they learnt from: train questions only.
    gguf = Path(summary["served"])
    grpo_run = db.training_run_for_checkpoint(factory, str(gguf))
    assert grpo_run is not None and grpo_run.kind == "grpo" and grpo_run.status == "ok"
    sources = (grpo_run.source_run_ids or {})["ids"]
    assert sources and all(runs[i].question in train for i in sources)
    assert {runs[i].graph for i in sources} >= {"single:SmolLM2-135M-Instruct", "router-r1"}
    assert [s["step"] for s in (grpo_run.metrics or {})["steps"] if "reward" in s] == [1]
    assert "frac_reward_zero_std" in (grpo_run.metrics or {})["steps"][0]

    # Exported, and served: router.yaml names the file, a service from it routes with it.
    assert gguf.suffix == ".gguf" and gguf.read_bytes()[:4] == b"GGUF"
    assert gguf.is_relative_to(tmp_path / "loop")
    settings = load_settings(summary["router_yaml"])
    assert settings.router_checkpoint == str(gguf)
    with RouteGraphService.create(settings, start_servers=False) as service:
        view = service.pool_view()
    assert view["router_weights"] == str(gguf.resolve()) and view["trained_by"]["id"] == grpo_run.id
    evaluated = [r for r in runs.values() if r.router_checkpoint == str(gguf.resolve())]
    assert {r.question for r in evaluated} == held_out and all(r.status == "ok" for r in evaluated)

    # The report.
    text = report.read_text()
    assert f"GRPO α=0: training run {grpo_run.id} → `{gguf}`" in text
    assert "| router-r1 · untrained | 2 |" in text and "| router-r1 · α=0 | 2 |" in text
    assert "zero-spread groups" in text and "## Wall time" in text
