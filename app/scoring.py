"""Router-R1's rewards for one stored run, computed with the training reward functions themselves.

:func:`score_trajectory` is pure; the service reads the run and its gold answers, calls it and stores a
``Reward`` row with the parts, the total and the configuration (``RewardConfig.as_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from training.rewards import CostReward, FormatReward, OutcomeReward, RouterR1Reward

SCORED_GRAPHS = ("router-r1",)
"""Graphs whose stored trajectory is a Router-R1 text (think / search / information / answer tags)."""


@dataclass(frozen=True)
class RewardConfig:
    """How the parts are weighed: ``alpha`` (the cost share of a correct answer's reward), ``metric``
    (``em`` or ``f1`` for the outcome) and ``window`` (how many recent runs' costs normalise the cost)."""

    alpha: float = 0.0
    metric: str = "em"
    window: int = 256

    def as_dict(self) -> dict[str, Any]:
        return {"reward": "router_r1", **asdict(self)}


@dataclass(frozen=True)
class RewardParts:
    format: float
    outcome: float
    cost: float
    total: float


def score_trajectory(
    trajectory: str,
    answers: Sequence[str],
    cost: float,
    models: Sequence[str],
    config: RewardConfig,
    recent_costs: Sequence[float] = (),
) -> RewardParts:
    """The rewards GRPO would give this trajectory, its cost normalised against ``recent_costs`` (newest
    first; the first ``window - 1`` count).

    The run is the last row of one batch whose other rows are the recent runs (their costs only: they
    score -1 format and 0 outcome, which never touches this row), so :class:`CostReward`'s window holds
    the recent costs and this one, exactly as during training.

    >>> score_trajectory("<think>x</think><answer> Paris </answer>", ["Paris"], 0.0, ["M"], RewardConfig())
    RewardParts(format=0.0, outcome=1.0, cost=0.5, total=1.0)
    """
    costs = [*list(recent_costs)[: config.window - 1], cost]
    completions = [""] * (len(costs) - 1) + [trajectory]
    batch: dict[str, Any] = {
        "answers": [[]] * (len(costs) - 1) + [list(answers)],
        "cost": costs,
        "models": [list(models)] * len(costs),
    }
    total = RouterR1Reward(models, config.alpha, config.metric, config.window)(None, completions, **batch)
    formats = FormatReward(models)(None, completions, **batch)
    outcomes = OutcomeReward(config.metric)(None, completions, **batch)
    cost_rewards = CostReward(config.window)(None, completions, **batch)
    return RewardParts(format=formats[-1], outcome=outcomes[-1], cost=cost_rewards[-1], total=total[-1])
