"""Learning to allocate for real on CPU: SFT warm start and GRPO steps on recorded outcomes, then the
exported router chooses models for dev queries through llama.cpp under the graph's step grammar."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.bench.data import load_queries, split, stratified
from app.bench.routers import LLMRouter
from app.bench.run import recorded_pool
from app.config import PROJECT_ROOT, Settings
from app.pool.local_servers import LocalServers, gguf_path
from storage import db
from training import allocate
from training.checkpoints import hf_checkpoint_from_gguf

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = PROJECT_ROOT / "data" / "routing_outcomes" / "train.jsonl"


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


SMALL_POOL = """
router:
  name: SmolLM2-135M-Router
  backend: llamacpp
  gguf: smollm2-135m
  price_in: 0.02
  price_out: 0.04
  descriptor: the bundled router
models:
  - {name: gemma-2-9b-it, backend: recorded, outcomes: OUTCOMES, price_in: 0.1, price_out: 0.1,
     descriptor: 9B general model}
  - {name: llama-3.1-8b-instruct, backend: recorded, outcomes: OUTCOMES, price_in: 0.2, price_out: 0.2,
     descriptor: 8B reasoning model}
  - {name: llama-3.1-nemotron-51b-instruct, backend: recorded, outcomes: OUTCOMES, price_in: 0.9,
     price_out: 0.9, descriptor: 51B accurate model}
"""


@pytest.mark.timeout(1800)
def test_allocation_sft_then_grpo_on_recorded_outcomes(tmp_path: Path) -> None:
    # Three of the nine models keep the prompt short, so that a few CPU steps teach the format.
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(SMALL_POOL.replace("OUTCOMES", str(DATA)))
    database_url = f"sqlite:///{tmp_path / 'train.db'}"
    summaries = allocate.main(
        str(PROJECT_ROOT / "training" / "recipes" / "allocate_cpu.yaml"),
        {
            "pool_file": str(pool_file),
            "output_dir": str(tmp_path / "allocate"),
            "database_url": database_url,
            "sft_examples": "32",
            "sft_steps": "8",
            "sft_learning_rate": "5e-4",  # a strong nudge: the format must be learnt in eight steps
            "per_device_train_batch_size": "4",
            "train_last_layers": "12",  # backpropagation stops there: the suite stays short
            "max_steps": "2",
            "limit": "2",
            "num_generations": "4",
            "temperature": "0.7",
            "learning_rate": "1e-4",
            "seed": "3",
        },
    )
    assert [s["status"] for s in summaries] == ["ok", "ok"]
    sft_summary, grpo_summary = summaries

    # SFT learnt: its loss fell.
    losses = [s["loss"] for s in sft_summary["steps"] if "loss" in s]
    assert losses[-1] < losses[0]

    # GRPO steps were scored by the allocation and format rewards, and stored.
    factory = db.session_factory(db.make_engine(database_url))
    stored = db.get_training_run(factory, grpo_summary["training_run_id"])
    assert stored is not None and stored.kind == "grpo-allocate" and stored.status == "ok"
    steps = [s for s in (stored.metrics or {})["steps"] if "reward" in s]
    assert [s["step"] for s in steps] == [1, 2]
    assert all("rewards/allocation/mean" in s and "format_rate" in s for s in steps)
    assert max(s["format_rate"] for s in steps) > 0, "the warm start must produce well-formed route steps"

    # Each stage changed the weights it started from (GRPO: its groups had reward variance to learn from).
    assert any(s["frac_reward_zero_std"] < 1 for s in steps)
    base = _weights(hf_checkpoint_from_gguf(gguf_path("smollm2-135m")))
    after_sft = _weights(tmp_path / "allocate" / "sft" / "final")
    after_grpo = _weights(tmp_path / "allocate" / "grpo" / "final")
    assert any(not torch.equal(base[k], after_sft[k]) for k in base.keys() & after_sft.keys())
    assert any(not torch.equal(after_sft[k], after_grpo[k]) for k in after_sft.keys() & after_grpo.keys())

    # The exported router allocates dev queries through llama.cpp, under the graph's step grammar.
    router_gguf = str(grpo_summary["checkpoint"])
    assert router_gguf.endswith(".gguf")
    pool = recorded_pool(pool_file, DATA)
    router = LLMRouter.trained(pool, router_gguf)
    servers = LocalServers(Settings(database_url=database_url))
    try:
        servers.start_for(router.pool)
        dev = stratified(split(load_queries(DATA))[1], 4)
        chosen = [asyncio.run(router.achoose(q, pool.models)) for q in dev]
    finally:
        servers.stop_all()
    assert set(chosen) <= set(pool.names)
    assert router.failed == 0 and router.malformed == 0
