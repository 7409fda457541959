"""The learning loop for real on CPU: SFT warm start, GRPO on multi-turn rollouts, GGUF export, serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from app.config import PROJECT_ROOT, Settings
from app.pool import load_pool
from app.service import RouteGraphService
from graphs.router_r1 import prompts
from storage import db
from storage.cache import SqlResponseCache
from training import sft
from training.common import TrainingSession, load_recipe
from training.data import read_qa_file
from training.grpo import GRPORecipe, build_trainer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = PROJECT_ROOT / "data" / "nq_open_dev300.jsonl"
RESPONSE_TOKENS = 48


def _seed_replay_cache(database_url: str, questions: list[dict[str, Any]]) -> None:
    """Every pool model's recorded answer to each training question: rollouts then call no live model.

    One model knows the answers and the other does not, so which model a rollout routes to changes its
    reward: GRPO groups then have reward variance, hence a gradient.
    """
    pool = load_pool(PROJECT_ROOT / "pools" / "tiny.yaml")
    pool.cache = SqlResponseCache(db.session_factory(db.make_engine(database_url)))
    knows = pool.names[0]
    for row in questions:
        for model in pool.names:
            pool.seed(
                model,
                row["question"],
                row["answers"][0] if model == knows else "I do not know",
                system=prompts.POOL_MODEL_SYSTEM,
                max_tokens=RESPONSE_TOKENS,
                input_tokens=40,
                output_tokens=4,
            )


@pytest.fixture(scope="module")
def warm_router(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few SFT steps on synthetic well-formed trajectories: the format warm start GRPO needs."""
    out = tmp_path_factory.mktemp("sft")
    summary = sft.main(
        str(PROJECT_ROOT / "training" / "recipes" / "sft.yaml"),
        {
            "database_url": f"sqlite:///{out / 'traces.db'}",
            "output_dir": str(out),
            "data": f"synthetic:{DATA}",
            "limit": "8",
            "max_steps": "4",
            "export_gguf": "false",
        },
    )
    assert summary["status"] == "ok"
    losses = [s["loss"] for s in summary["steps"] if "loss" in s]
    assert losses[-1] < losses[0], "SFT must lower the loss"
    return out / "final"


@pytest.mark.timeout(1800)
def test_grpo_three_steps_on_replayed_pool(warm_router: Path, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'traces.db'}"
    _seed_replay_cache(database_url, read_qa_file(DATA, limit=4, seed=0))
    recipe = load_recipe(
        GRPORecipe,
        PROJECT_ROOT / "training" / "recipes" / "grpo_cpu_smoke.yaml",
        {
            "model": str(warm_router),
            "data": str(DATA),
            "limit": "4",
            "seed": "0",
            "database_url": database_url,
            "output_dir": str(tmp_path / "grpo"),
            "replay": "only",  # every route call is answered from the seeded cache, none live
            "max_steps": "3",
            "max_turns": "1",
            "response_max_tokens": str(RESPONSE_TOKENS),
            "temperature": "1.0",
        },
    )
    captured: list[dict[str, Any]] = []
    with TrainingSession.open("grpo", recipe) as session:
        assert session.servers is None  # replay only: no model server was started
        session.grpo_dataset(recipe)
        trainer = build_trainer(recipe, session)
        before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        generate_and_score = trainer._generate_and_score_completions

        def spy(batch: Any) -> Any:
            output = generate_and_score(batch)
            captured.append(output)
            return output

        trainer._generate_and_score_completions = spy
        summary = session.train(trainer)
        factory = session.factory
        rollout = trainer.rollout_func

    # The weights moved.
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "GRPO must update the router's weights"

    # Route calls happened, were answered from the cache, and their tokens carry no loss.
    assert rollout.calls > 0
    information_tokens = 0
    for output in captured:
        assert "tool_mask" in output, "env_mask must reach the loss as TRL's tool mask"
        env = (output["tool_mask"] == 0) & (output["completion_mask"] == 1)
        for row, mask in zip(output["completion_ids"], env, strict=True):
            inserted = row[mask]
            if len(inserted):
                text = trainer.processing_class.decode(inserted)
                assert "<information>" in text and "<search>" not in text
                information_tokens += len(inserted)
    assert information_tokens > 0

    # Per-step metrics are in the trace store.
    stored = db.get_training_run(factory, summary["training_run_id"])
    assert stored is not None and stored.status == "ok" and stored.kind == "grpo"
    steps = (stored.metrics or {})["steps"]
    assert [s["step"] for s in steps if "reward" in s] == [1, 2, 3]
    assert all("format_rate" in s and "accuracy" in s for s in steps if "reward" in s)
    assert (tmp_path / "grpo" / "reward_curve.html").is_file()

    # Closing the loop: the exported GGUF serves as the router of the embedded pool.
    router_gguf = Path(str(summary["checkpoint"]))
    assert router_gguf.suffix == ".gguf" and router_gguf.is_file()
    settings = Settings(database_url=database_url, router_checkpoint=str(router_gguf), max_turns=1)
    with RouteGraphService.create(settings) as service:
        result = service.ask("What is the capital of France?")
    assert result.status == "ok"
    assert result.hops[0].model == service.pool.router.name and result.hops[0].output_tokens > 0
    run = service.get_run(result.run_id)
    assert run is not None and str(router_gguf.resolve()) in (run.router_model or "")
