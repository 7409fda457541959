"""Run provenance: graph kind and code version, router weights and the options each run was asked with."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from app.pool import ModelEntry
from app.service import RouteGraphService
from app.service.provenance import graph_version, package_version, router_weights
from tests.fakes import ROUTER, SMALL, make_fake_pool, think_answer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/t.db")


def test_graph_runs_record_graph_version_router_weights_and_options(settings: Settings) -> None:
    pool = make_fake_pool({ROUTER: [think_answer("Paris")]})
    with RouteGraphService.create(settings, pool=pool, start_servers=False) as service:
        result = service.ask("Capital of France?", budget_usd=0.02)
        run = service.get_run(result.run_id)
        direct = service.get_run(
            service.record_direct("q", graph=f"single:{SMALL}", hops=[], answer="a").run_id
        )
    assert run is not None and direct is not None
    assert run.graph == "router-r1"
    assert run.graph_version == graph_version("router-r1")
    assert run.router_checkpoint == ROUTER  # an API router: its served model id
    assert run.options == {"budget_usd": 0.02, "max_turns": settings.max_turns}
    # A baseline made of direct calls: no graph code, no router weights.
    assert (direct.graph_version, direct.router_checkpoint, direct.options) == (package_version(), None, None)


def test_trained_router_checkpoint_is_recorded(tmp_path: Path) -> None:
    weights = tmp_path / "router-step-40.gguf"
    weights.write_bytes(b"GGUF")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", router_checkpoint=str(weights))
    pool = make_fake_pool()
    with RouteGraphService.create(settings, pool=pool, start_servers=False) as service:
        run_id = service._open_run("q", "router-r1")
        run = service.get_run(run_id)
    assert run is not None and run.router_checkpoint == str(weights.resolve())
    assert run.router_model == f"{ROUTER} [{weights.resolve()}]"


def test_graph_version_names_the_package_and_the_graph_code() -> None:
    r1, r2 = graph_version("router-r1"), graph_version("r2-reasoner")
    assert r1.startswith(f"{package_version()}+g") and r2.startswith(f"{package_version()}+g")
    assert r1 != r2 and len(r1) <= 64
    assert graph_version("router-r1") == r1  # stable
    assert graph_version("single:Small-LM") == package_version()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"backend": "llamacpp", "gguf": "smollm2-135m"}, "smollm2-135m"),  # bundled
        ({"backend": "llamacpp", "gguf": "/ckpt/router.gguf"}, "/ckpt/router.gguf"),
        ({"backend": "vllm", "hf_model": "ulab-ai/Router-R1-Qwen2.5-3B"}, "ulab-ai/Router-R1-Qwen2.5-3B"),
        ({"backend": "openai", "base_url": "http://x/v1", "model_id": "gpt-x"}, "gpt-x"),
        ({"backend": "openai", "base_url": "http://x/v1"}, "R"),  # served as its name
    ],
)
def test_router_weights(fields: dict[str, str], expected: str) -> None:
    entry = ModelEntry(name="R", price_in=0, price_out=0, descriptor="router", **fields)  # type: ignore[arg-type]
    assert router_weights(entry) == expected
