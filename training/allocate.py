"""Learning to allocate on recorded outcomes: ``routegraph train allocate --recipe training/recipes/X.yaml``.

The router reads Router-R1's own prompt (the query, cut at ``ROUTER_QUESTION_CHARS``, plus every model's
descriptor and price) and writes one route step, ``<think>…</think>`` then ``<search> MODEL: … </search>``.
Its reward is the chosen model's recorded score on the query − λ · price / max price, plus the format reward
(:class:`training.rewards.AllocationReward`, :class:`training.rewards.AllocationFormatReward`).

Two stages, R2-Reasoner's SFT-then-RL schedule, in one ``main``:

1. SFT warm start (``sft_steps`` > 0). A 135M model never writes the protocol unprompted, so GRPO would see
   no signal. The targets teach the format and a task-level prior: for a train query, the model with the
   best mean reward (same λ) over the train queries of its task, with a thought that names the task kind.
2. GRPO from the warm-start weights on per-query recorded rewards: the policy moves from the task prior to
   whatever each query's wording predicts.

Only the train part of :func:`app.bench.data.split` is read; the dev part stays for the leaderboard.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.bench.data import Query, load_queries, price, router_question, score_of, split, stratified
from app.bench.embeddings import Embeddings
from app.bench.evidence import Evidence
from app.config import Settings
from app.pool import ModelEntry, Pool
from training.common import Recipe, TrainingSession, load_recipe, resolve_path
from training.data import router_prompt

ROUTED_QUERY = "the question above"
"""The route call's sub-query: allocation hands the whole question to the chosen model."""

TASK_KINDS = {
    "agentverse-logicgrid": "a logic grid puzzle",
    "agentverse-mgsm": "a multilingual maths word problem",
    "arc_challenge": "a multiple-choice science question",
    "commongen": "a sentence to write from given concepts",
    "commonsense_qa": "a commonsense multiple-choice question",
    "gpqa": "a graduate-level science question",
    "gsm8k": "a maths word problem",
    "human_eval": "a Python function to complete",
    "math": "a competition maths problem",
    "mbpp": "a short Python programming task",
    "mmlu": "a multiple-choice exam question",
    "natural_qa": "an open factual question",
    "openbook_qa": "an elementary science multiple-choice question",
    "trivia_qa": "a trivia question",
}


@dataclass
class AllocateRecipe(Recipe):
    pool_file: str = "pools/recorded_9llm.yaml"
    data: str = "data/routing_outcomes/train.jsonl"
    limit: int | None = 64
    """GRPO prompts, drawn from the train split, a seeded shuffle."""
    output_dir: str = "runs/allocate"
    replay: str = "only"
    """Recorded models call nothing; 'only' also keeps the embedded servers from starting."""
    lam: float = 0.05
    """λ: weight of the normalised price in the reward (0 = score only)."""
    sft_examples: int = 256
    """Warm-start rows, balanced over tasks (0 with sft_steps 0 skips the stage)."""
    sft_steps: int = 64
    sft_learning_rate: float = 2e-4
    sft_max_length: int = 2048
    max_steps: int = 30
    """GRPO steps."""
    learning_rate: float = 2e-5
    num_generations: int = 4
    temperature: float = 1.0
    beta: float = 0.0
    max_completion_tokens: int = 64
    train_last_layers: int = 12
    """Only the last N transformer blocks learn (0: all): backpropagation stops there, which is what makes
    ~1,100-token prompts trainable on a CPU."""
    evidence: bool = False
    """Show the router evidence: the recorded scores of the ``evidence_k`` most similar train queries per
    model, ranked by value at λ (:mod:`app.bench.evidence`); the warm start then targets the top-ranked
    model instead of the task prior."""
    evidence_k: int = 25
    encoder: str = "minilm"
    """Query embeddings the evidence's neighbours are found with (app.bench.embeddings)."""
    cache_dir: str | None = None
    """Embedding cache folder (default: the ``cache_dir`` setting)."""


# -- rows -----------------------------------------------------------------------------------------------
def route_completion(thought: str, model: str) -> str:
    """One allocation step in the Router-R1 action format (what the graph's step grammar accepts)."""
    return f"<think>{thought}</think>\n<search> {model}: {ROUTED_QUERY} </search>"


def task_prior(train: Sequence[Query], models: Sequence[ModelEntry], lam: float) -> dict[str, ModelEntry]:
    """Per task, the model with the best mean reward (score − λ · price / max price) on the train queries."""
    top = max(price(m) for m in models) or 1.0
    by_task: dict[str, list[Query]] = defaultdict(list)
    for query in train:
        by_task[query.task].append(query)

    def mean_reward(queries: list[Query], m: ModelEntry) -> float:
        return sum(score_of(q, m) for q in queries) / len(queries) - lam * price(m) / top

    return {
        task: max(models, key=lambda m: (mean_reward(queries, m), -price(m)))
        for task, queries in by_task.items()
    }


def sft_rows(
    train: Sequence[Query],
    models: Sequence[ModelEntry],
    lam: float,
    limit: int,
    seed: int = 0,
    evidence: Evidence | None = None,
) -> list[dict[str, Any]]:
    """Warm-start rows, round-robin over tasks so that every task is taught.

    Target: the task prior's model; with ``evidence``, the prompt carries it and the target is its
    best-value model (what a router reading the evidence should pick)."""
    prior = task_prior(train, models, lam)
    shuffled = list(train)
    random.Random(seed).shuffle(shuffled)
    picked = stratified(shuffled, limit)
    texts = evidence.texts(picked) if evidence else {q.id: router_question(q) for q in picked}
    targets = evidence.top_choice(picked) if evidence else {q.id: prior[q.task].name for q in picked}
    rows = []
    for query in picked:
        chosen = targets[query.id]
        kind = TASK_KINDS.get(query.task, "a question")
        rows.append(
            {
                "prompt": router_prompt(texts[query.id], models),
                "completion": [
                    {"role": "assistant", "content": route_completion(f"This is {kind}.", chosen)}
                ],
            }
        )
    return rows


def grpo_rows(
    queries: Sequence[Query],
    models: Sequence[ModelEntry],
    limit: int | None,
    seed: int = 0,
    evidence: Evidence | None = None,
) -> list[dict[str, Any]]:
    """GRPO rows: the prompt plus what the reward reads (aligned names, recorded scores and prices)."""
    chosen = list(queries)
    random.Random(seed).shuffle(chosen)
    chosen = chosen[:limit]
    texts = evidence.texts(chosen) if evidence else {q.id: router_question(q) for q in chosen}
    return [
        {
            "prompt": router_prompt(texts[q.id], models),
            "models": [m.name for m in models],
            "scores": [score_of(q, m) for m in models],
            "prices": [price(m) for m in models],
            "task": q.task,
        }
        for q in chosen
    ]


def evidence_for(
    recipe: AllocateRecipe, train: Sequence[Query], models: Sequence[ModelEntry]
) -> Evidence | None:
    """The evidence a recipe with ``evidence: true`` shows, fitted on the train split; else None."""
    if not recipe.evidence:
        return None
    cache = Path(recipe.cache_dir) if recipe.cache_dir else Settings().cache_dir
    return Evidence(Embeddings(recipe.encoder, cache), recipe.evidence_k, recipe.lam).fit(train, models)


def train_queries(recipe: AllocateRecipe, pool: Pool) -> list[Query]:
    queries = load_queries(resolve_path(recipe.data))
    missing = [m.served_id for m in pool.models if m.served_id not in queries[0].scores]
    if missing:
        raise ValueError(f"{recipe.data}: no recorded scores for pool models {missing}")
    return split(queries)[0]


# -- trainers -------------------------------------------------------------------------------------------
def _dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    if not rows:
        raise ValueError("no training rows")
    return Dataset.from_list(rows)


def build_sft_trainer(recipe: AllocateRecipe, session: TrainingSession, train: Sequence[Query]) -> Any:
    from trl import SFTConfig, SFTTrainer

    models = session.pool.models
    evidence = evidence_for(recipe, train, models)
    session.dataset = _dataset(
        sft_rows(train, models, recipe.lam, recipe.sft_examples, recipe.seed, evidence)
    )
    return SFTTrainer(
        model=session.load_model(recipe.train_last_layers),
        args=SFTConfig(
            **recipe.trainer_args(), max_length=recipe.sft_max_length, gradient_checkpointing=False
        ),
        train_dataset=session.dataset,
        processing_class=session.tokenizer,
        peft_config=session.peft_config(recipe.use_lora, recipe.lora_r),
        callbacks=[session.callback()],
    )


def build_grpo_trainer(recipe: AllocateRecipe, session: TrainingSession, train: Sequence[Query]) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    from training.rewards import AllocationFormatReward, AllocationReward

    models = session.pool.models
    evidence = evidence_for(recipe, train, models)
    session.dataset = _dataset(grpo_rows(train, models, recipe.limit, recipe.seed, evidence))
    rewards: list[Any] = [AllocationReward(recipe.lam), AllocationFormatReward()]
    config = GRPOConfig(
        **recipe.trainer_args(),
        num_generations=recipe.num_generations,
        max_completion_length=recipe.max_completion_tokens,
        beta=recipe.beta,
        temperature=recipe.temperature,
        # Recomputing activations would also carry backpropagation below the LoRA blocks.
        gradient_checkpointing=False,
        disable_tqdm=False,
    )
    return GRPOTrainer(
        model=session.load_model(recipe.train_last_layers),
        reward_funcs=rewards,
        args=config,
        train_dataset=session.dataset,
        processing_class=session.tokenizer,
        peft_config=session.peft_config(recipe.use_lora, recipe.lora_r),
        callbacks=[session.callback()],
    )


def main(recipe_file: str | None = None, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Warm start (unless ``sft_steps`` is 0), then GRPO; each stage's summary, in order."""
    recipe = load_recipe(AllocateRecipe, recipe_file, overrides)
    summaries = []
    model = recipe.model
    if recipe.sft_steps > 0:
        stage = dataclasses.replace(
            recipe,
            max_steps=recipe.sft_steps,
            learning_rate=recipe.sft_learning_rate,
            output_dir=str(Path(recipe.output_dir) / "sft"),
        )
        with TrainingSession.open("sft-allocate", stage) as session:
            trainer = build_sft_trainer(stage, session, train_queries(stage, session.pool))
            summaries.append(session.train(trainer))
        model = str(Path(stage.output_dir) / "final")
    if recipe.max_steps > 0:
        stage = dataclasses.replace(recipe, model=model, output_dir=str(Path(recipe.output_dir) / "grpo"))
        with TrainingSession.open("grpo-allocate", stage) as session:
            trainer = build_grpo_trainer(stage, session, train_queries(stage, session.pool))
            summaries.append(session.train(trainer))
    return summaries


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else None)
