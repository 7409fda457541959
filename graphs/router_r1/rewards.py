"""Router-R1's rule-based rewards (format, outcome, cost and the paper's combination), in TRL's reward
function shape ``(prompts, completions, **kwargs) -> list[float]``, and the score of one stored run.

Dataset columns and rollout fields arrive as keyword arguments: ``answers`` (gold aliases per row),
``cost`` (USD the rollout's route calls spent), ``models`` (pool names the router could call).
Parameterised rewards are small callable classes so that they pickle. Pure Python: GRPO trains with these
and the service scores stored runs with these (:func:`score_trajectory`), so both agree.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from graphs.answers import NORMALIZATIONS, Normalization, exact_match, token_f1
from graphs.router_r1.prompts import TAG_PATTERN, extract_answer, parse_action


def completion_text(completion: Any) -> str:
    """Plain text of a completion, conversational (list of messages) or not."""
    if isinstance(completion, list):
        return "".join(str(message.get("content", "")) for message in completion)
    return str(completion)


def is_well_formed(trajectory: str, models: Sequence[str]) -> bool:
    """Router-R1's format rules for a whole trajectory.

    It starts with <think> and ends with </answer>; tags are balanced and never nested; there is exactly one
    answer and at least one non-empty thought; every route call names a known model with a non-empty query
    and is followed by exactly one information block.

    >>> is_well_formed("<think>x</think><answer> Paris </answer>", ["M"])
    True
    """
    text = trajectory.strip()
    if not text.startswith("<think>") or not text.endswith("</answer>"):
        return False
    open_tag: str | None = None
    open_at = 0
    counts = {"think": 0, "search": 0, "answer": 0, "information": 0}
    awaiting_information = False
    for match in TAG_PATTERN.finditer(text):
        closing, tag = match.group(1) == "/", match.group(2)
        if not closing:
            if open_tag is not None:
                return False  # nested, or an unclosed tag before this one
            if tag == "information" and not awaiting_information:
                return False  # information without a route call before it
            if tag != "information" and awaiting_information:
                return False  # a route call left unanswered
            open_tag, open_at = tag, match.end()
            continue
        if open_tag != tag:
            return False
        body = text[open_at : match.start()]
        counts[tag] += 1
        if tag == "think" and not body.strip():
            return False
        if tag == "search":
            if parse_action(f"<search>{body}</search>", models).kind != "route":
                return False
            awaiting_information = True
        if tag == "information":
            awaiting_information = False
        open_tag = None
    return (
        open_tag is None
        and counts["answer"] == 1
        and counts["think"] >= 1
        and counts["search"] == counts["information"]
    )


class FormatReward:
    """0 for a well-formed trajectory, -1 otherwise.

    >>> FormatReward(["M"])(None, ["<think>x</think><answer> a </answer>", "no tags"])
    [0.0, -1.0]
    """

    __name__ = "format"

    def __init__(self, models: Sequence[str] | None = None) -> None:
        self.models = list(models or [])

    def __call__(self, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        row_models = kwargs.get("models") or [self.models] * len(completions)
        return [
            0.0 if is_well_formed(completion_text(c), models) else -1.0
            for c, models in zip(completions, row_models, strict=True)
        ]


class OutcomeReward:
    """Exact match (or token F1) of the trajectory's <answer> against the gold aliases: Router-R1's qa_em.py.

    EM is ``em_check``; F1 is ``qa_em.f1_score``, HotpotQA's F1 (0 when either side is yes / no / noanswer
    and the two differ), best over the aliases. ``normalize="unicode"`` is the lenient normalisation of
    :mod:`graphs.answers`, never the default.

    >>> OutcomeReward()(None, ["<answer> The Beatles </answer>"], answers=[["beatles"]])
    [1.0]
    """

    __name__ = "outcome"

    def __init__(self, metric: str = "em", normalize: Normalization = "official") -> None:
        if metric not in ("em", "f1"):
            raise ValueError(f"metric must be 'em' or 'f1', not {metric!r}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, not {normalize!r}")
        self.metric, self.normalize = metric, normalize

    def __call__(self, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        answers = kwargs["answers"]
        scores = []
        for completion, golds in zip(completions, answers, strict=True):
            predicted = extract_answer(completion_text(completion))
            if predicted is None:
                scores.append(0.0)
            elif self.metric == "em":
                scores.append(exact_match(predicted, golds, self.normalize))
            else:
                scores.append(token_f1(predicted, golds, self.normalize, rule="hotpotqa"))
        return scores


class CostReward:
    """Cheaper is better: sqrt(cost) min-max normalised against the 5th/95th percentiles of recent rollouts.

    The window holds the transformed costs of the last ``window`` rollouts, this batch included; with no
    spread in the window every rollout gets 0.5 (Router-R1's convention).

    >>> [round(r, 6) for r in CostReward(window=8)(None, ["a", "b", "c"], cost=[0.0, 0.0001, 0.0004])]
    [1.0, 0.5, 0.0]
    """

    __name__ = "cost"

    def __init__(self, window: int = 256, low: float = 0.05, high: float = 0.95) -> None:
        self.history: deque[float] = deque(maxlen=window)
        self.low, self.high = low, high

    def __call__(self, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        transformed = [math.sqrt(max(float(c), 0.0)) for c in kwargs["cost"]]
        self.history.extend(transformed)
        lo, hi = _percentile(list(self.history), self.low), _percentile(list(self.history), self.high)
        if hi - lo < 1e-12:
            return [0.5] * len(transformed)
        return [1.0 - min(max((t - lo) / (hi - lo), 0.0), 1.0) for t in transformed]


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, as numpy's default."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


class RouterR1Reward:
    """The paper's combination: correct → (outcome + format)·(1−α) + cost·α; wrong → format.

    >>> reward = RouterR1Reward(["M"], alpha=0.0)
    >>> reward(None, ["<think>x</think><answer> Paris </answer>"], answers=[["Paris"]], cost=[0.0])
    [1.0]
    """

    __name__ = "router_r1"

    def __init__(
        self,
        models: Sequence[str] | None = None,
        alpha: float = 0.0,
        metric: str = "em",
        window: int = 256,
        normalize: Normalization = "official",
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must lie in [0, 1]")
        self.alpha = alpha
        self.format = FormatReward(models)
        self.outcome = OutcomeReward(metric, normalize)
        self.cost = CostReward(window)

    def __call__(self, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        formats = self.format(prompts, completions, **kwargs)
        outcomes = self.outcome(prompts, completions, **kwargs)
        costs = self.cost(prompts, completions, **kwargs)
        return [
            (o + f) * (1 - self.alpha) + c * self.alpha if o > 0 else f
            for f, o, c in zip(formats, outcomes, costs, strict=True)
        ]


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
