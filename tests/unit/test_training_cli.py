"""`routegraph train` argument handling and recipe loading (no model is loaded in these paths)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app
from training.common import load_recipe
from training.grpo import GRPORecipe
from training.sft import SFTRecipe

runner = CliRunner()
RECIPES = Path(__file__).resolve().parents[2] / "training" / "recipes"


@pytest.mark.parametrize("recipe", ["grpo_cpu_smoke.yaml", "grpo_gpu.yaml"])
def test_shipped_grpo_recipes_load(recipe: str) -> None:
    loaded = load_recipe(GRPORecipe, RECIPES / recipe)
    assert loaded.max_turns in (2, 4)
    assert loaded.use_vllm is (recipe == "grpo_gpu.yaml")


def test_shipped_sft_recipe_loads() -> None:
    assert load_recipe(SFTRecipe, RECIPES / "sft.yaml").data.startswith("synthetic:")


def test_overrides_are_typed_like_the_field() -> None:
    recipe = load_recipe(GRPORecipe, None, {"max_steps": "7", "alpha": "0.25", "use_lora": "true"})
    assert (recipe.max_steps, recipe.alpha, recipe.use_lora) == (7, 0.25, True)


def test_unknown_recipe_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_stepz: 3\n")
    result = runner.invoke(app, ["train", "grpo", "--recipe", str(bad)])
    assert result.exit_code == 2
    assert "max_stepz" in result.output


def test_override_without_equals_is_refused() -> None:
    result = runner.invoke(app, ["train", "sft", "--recipe", str(RECIPES / "sft.yaml"), "max_steps"])
    assert result.exit_code == 2
    assert "key=value" in result.output


def test_recipe_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    result = runner.invoke(app, ["train", "sft", "--recipe", str(bad)])
    assert result.exit_code == 2
    assert "flat mapping" in result.output


def test_recipe_trainer_args_are_valid_trl_configs(tmp_path: Path) -> None:
    from trl import GRPOConfig, SFTConfig

    grpo = load_recipe(GRPORecipe, RECIPES / "grpo_cpu_smoke.yaml", {"output_dir": str(tmp_path / "g")})
    config = GRPOConfig(**grpo.trainer_args(), num_generations=grpo.num_generations)
    assert (config.max_steps, config.use_cpu, config.report_to) == (grpo.max_steps, True, [])
    sft = load_recipe(SFTRecipe, RECIPES / "sft.yaml", {"output_dir": str(tmp_path / "s")})
    assert SFTConfig(**sft.trainer_args(), max_length=sft.max_length).learning_rate == sft.learning_rate


def test_an_unusable_database_url_is_one_line_without_its_password() -> None:
    url = "mysql+pymysql://admin:S3cr3tPass@host/db"
    result = runner.invoke(
        app, ["train", "sft", "--recipe", str(RECIPES / "sft.yaml"), f"database_url={url}"]
    )
    assert result.exit_code == 2, result.output
    assert "mysql+pymysql://admin:***@host/db" in result.output
    assert "S3cr3tPass" not in result.output
    assert isinstance(result.exception, SystemExit)  # an exit code, not a traceback
