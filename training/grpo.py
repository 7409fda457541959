"""GRPO on multi-turn Router-R1 rollouts: ``routegraph train grpo --recipe training/recipes/X.yaml``.

A thin ``main`` over :class:`GRPORecipe`; TRL's ``GRPOTrainer`` does the optimisation, :mod:`training.rollout`
the multi-turn generation, :mod:`training.rewards` the scoring. Scale-out (DDP, DeepSpeed, several nodes) is
``accelerate launch``'s job with the configs in ``training/recipes/``; generation moves to vLLM with
``use_vllm: true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from training.common import Recipe, TrainingSession, load_recipe

if TYPE_CHECKING:
    from graphs.answers import Normalization


@dataclass
class GRPORecipe(Recipe):
    data: str = "data/nq_open_dev300.jsonl"
    """A QA JSONL file (question, answers) or 'traces' for labelled stored runs."""
    output_dir: str = "runs/grpo"
    num_generations: int = 2
    beta: float = 0.0
    temperature: float = 1.0
    max_turns: int = 4
    step_max_tokens: int = 96
    max_completion_tokens: int = 512
    response_max_tokens: int = 64
    alpha: float = 0.0
    """Weight of the cost reward (Router-R1's α)."""
    metric: str = "em"
    """Outcome reward: ``em`` or ``f1`` (Router-R1's ``qa_em.py``)."""
    normalize: Normalization = "official"
    """Answer normalisation of the outcome reward: ``official`` (SQuAD's) or the lenient ``unicode``."""
    gradient_checkpointing: bool = False
    """Trades compute for memory: worth it for billion-parameter routers on GPU, not for 135M on CPU."""
    use_vllm: bool = False
    vllm_mode: str = "colocate"


def build_trainer(recipe: GRPORecipe, session: TrainingSession) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    from training.rewards import CostReward, FormatReward, OutcomeReward, RouterR1Reward
    from training.rollout import RolloutConfig, RouterR1Rollout

    rollout = RouterR1Rollout(
        session.pool,
        RolloutConfig(
            max_turns=recipe.max_turns,
            step_max_tokens=recipe.step_max_tokens,
            max_completion_tokens=recipe.max_completion_tokens,
            response_max_tokens=recipe.response_max_tokens,
            temperature=recipe.temperature,
        ),
    )
    names = session.pool.names
    rewards: list[Any] = [
        RouterR1Reward(names, recipe.alpha, recipe.metric, normalize=recipe.normalize),
        FormatReward(names),
        OutcomeReward(recipe.metric, recipe.normalize),
        CostReward(),
    ]
    config = GRPOConfig(
        **recipe.trainer_args(),
        num_generations=recipe.num_generations,
        max_completion_length=recipe.max_completion_tokens,
        beta=recipe.beta,
        temperature=recipe.temperature,
        # Only the combined reward trains; its parts are logged alongside with weight 0.
        reward_weights=[1.0, 0.0, 0.0, 0.0],
        gradient_checkpointing=recipe.gradient_checkpointing,
        use_vllm=recipe.use_vllm,
        vllm_mode=recipe.vllm_mode,
        generation_kwargs={"stop": ["</search>", "</answer>"]} if recipe.use_vllm else None,
        disable_tqdm=False,
    )
    trainer = GRPOTrainer(
        model=session.model_to_train(recipe.train_last_layers),
        reward_funcs=rewards,
        args=config,
        train_dataset=session.dataset,
        processing_class=session.tokenizer,
        peft_config=session.peft_config(recipe.use_lora, recipe.lora_r),
        rollout_func=rollout,
        callbacks=[session.callback(rollout)],
    )
    return trainer


def main(recipe_file: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    recipe = load_recipe(GRPORecipe, recipe_file, overrides)
    with TrainingSession.open("grpo", recipe) as session:
        session.grpo_dataset(recipe)
        return session.train(build_trainer(recipe, session))


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else None)
