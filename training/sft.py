"""SFT with TRL's ``SFTTrainer`` on successful traces: ``routegraph train sft --recipe RECIPE.yaml``.

Data, by ``data``: ``traces`` (well-formed Router-R1 trajectories of labelled runs answered right),
``synthetic:<QA file>`` (format warm start: one-route trajectories built from gold answers), or
``r2:traces`` (R2-Reasoner decompositions and allocations of runs answered right). ``alternate`` runs
R2-Reasoner's recipe: SFT and GRPO rounds in turn, each starting from the previous round's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common import Recipe, TrainingSession, load_recipe


@dataclass
class SFTRecipe(Recipe):
    data: str = "synthetic:data/nq_open_dev300.jsonl"
    limit: int | None = 64
    output_dir: str = "runs/sft"
    replay: str = "only"
    """SFT calls no model; 'only' also keeps the embedded servers from starting."""
    max_steps: int = 30
    learning_rate: float = 1e-4
    max_length: int = 1024


def sft_rows(recipe: SFTRecipe, session: TrainingSession) -> list[dict[str, Any]]:
    from training.data import r2_sft_rows_from_runs, sft_rows_from_runs, synthetic_sft_rows

    if recipe.data == "traces":
        rows, session.source_run_ids = sft_rows_from_runs(session.factory, session.pool)
        return rows
    if recipe.data == "r2:traces":
        rows, session.source_run_ids = r2_sft_rows_from_runs(session.factory, session.pool)
        return rows
    if recipe.data.startswith("synthetic:"):  # the QA reader resolves the path from any directory
        return synthetic_sft_rows(recipe.data.removeprefix("synthetic:"), session.pool, recipe.limit)
    raise ValueError(f"data must be 'traces', 'r2:traces' or 'synthetic:<QA file>', not {recipe.data!r}")


def build_trainer(recipe: SFTRecipe, session: TrainingSession) -> Any:
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(**recipe.trainer_args(), max_length=recipe.max_length)
    return SFTTrainer(
        model=session.model_to_train(recipe.train_last_layers),
        args=config,
        train_dataset=session.dataset,
        processing_class=session.tokenizer,
        peft_config=session.peft_config(recipe.use_lora, recipe.lora_r),
        callbacks=[session.callback()],
    )


def main(recipe_file: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    recipe = load_recipe(SFTRecipe, recipe_file, overrides)
    with TrainingSession.open("sft", recipe) as session:
        session.sft_dataset(sft_rows(recipe, session))
        return session.train(build_trainer(recipe, session))


def alternate(
    sft_recipe: str | Path, grpo_recipe: str | Path, rounds: int = 2, output_dir: str = "runs/alternate"
) -> list[dict[str, Any]]:
    """R2-Reasoner's schedule: SFT, then GRPO from the SFT checkpoint, repeated ``rounds`` times."""
    from training import grpo

    summaries = []
    model: str | None = None
    for round_number in range(rounds):
        base = f"{output_dir}/round{round_number}"
        overrides = {"output_dir": f"{base}/sft", **({"model": model} if model else {})}
        sft_summary = main(str(sft_recipe), overrides)
        model = str(Path(base) / "sft" / "final")
        grpo_summary = grpo.main(str(grpo_recipe), {"output_dir": f"{base}/grpo", "model": model})
        model = str(Path(base) / "grpo" / "final")
        summaries += [sft_summary, grpo_summary]
    return summaries
