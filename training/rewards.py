"""Reward functions GRPO trains with: Router-R1's own (:mod:`graphs.router_r1.rewards`, shared with the
service that scores stored runs) and the allocation rewards for learning to route on recorded outcomes,
by name in :data:`REWARDS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from graphs.router_r1.prompts import TAG_PATTERN, parse_action
from graphs.router_r1.rewards import (
    CostReward,
    FormatReward,
    OutcomeReward,
    RouterR1Reward,
    completion_text,
    is_well_formed,
)

__all__ = [
    "REWARDS",
    "AllocationFormatReward",
    "AllocationReward",
    "CostReward",
    "FormatReward",
    "OutcomeReward",
    "RouterR1Reward",
    "completion_text",
    "is_well_formed",
    "route_step",
]

_ROUTE_STEP = re.compile(r"\s*<think>(.*?)</think>\s*(<search>.*?</search>)\s*", re.DOTALL)


def route_step(completion: str, models: Sequence[str]) -> str | None:
    """The model an allocation completion routes to, when it is exactly one well-formed step; else None.

    One step is a non-empty thought, then one route call to a known model with a non-empty query, and
    nothing after it (the same step the graph's grammar allows, with the answer left out).

    >>> route_step("<think>maths</think> <search> Big-LM: the question above </search>", ["Big-LM"])
    'Big-LM'
    """
    match = _ROUTE_STEP.fullmatch(completion)
    if match is None or not match.group(1).strip() or TAG_PATTERN.search(match.group(1)):
        return None
    if len(TAG_PATTERN.findall(match.group(2))) != 2:  # one <search>…</search>, no second call or other tag
        return None
    action = parse_action(match.group(2), models)
    return action.model if action.kind == "route" else None


class AllocationFormatReward:
    """0 when an allocation completion is exactly one route step to a known model, -1 otherwise.

    >>> steps = ["<think>x</think><search> M: q </search>", "M"]
    >>> AllocationFormatReward()(None, steps, models=[["M"], ["M"]])
    [0.0, -1.0]
    """

    __name__ = "format"

    def __call__(self, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [
            0.0 if route_step(completion_text(c), models) is not None else -1.0
            for c, models in zip(completions, kwargs["models"], strict=True)
        ]


class AllocationReward:
    """Learning to allocate on recorded outcomes: the chosen model's recorded score − λ · price / max price.

    Row columns (aligned lists): ``models`` (names), ``scores`` (each model's recorded score on the query),
    ``prices`` (USD per 1M tokens). A completion that is not one route step earns 0 here; the format
    reward adds its -1.

    >>> AllocationReward(lam=0.5)(
    ...     None,
    ...     ["<think>x</think><search> Big: q </search>", "<think>x</think><search> Small: q </search>"],
    ...     models=[["Small", "Big"]] * 2, scores=[[0.0, 1.0]] * 2, prices=[[0.1, 1.0]] * 2,
    ... )
    [0.5, -0.05]
    """

    __name__ = "allocation"

    def __init__(self, lam: float = 0.0) -> None:
        if lam < 0:
            raise ValueError("lam (the weight of cost) must be >= 0")
        self.lam = lam

    def __call__(self, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        rewards = []
        for completion, models, scores, prices in zip(
            completions, kwargs["models"], kwargs["scores"], kwargs["prices"], strict=True
        ):
            chosen = route_step(completion_text(completion), models)
            if chosen is None:
                rewards.append(0.0)
                continue
            at = list(models).index(chosen)
            rewards.append(float(scores[at]) - self.lam * float(prices[at]) / (max(prices) or 1.0))
        return rewards


REWARDS = {
    "format": FormatReward,
    "outcome": OutcomeReward,
    "cost": CostReward,
    "router_r1": RouterR1Reward,
    "allocation": AllocationReward,
}
