"""Learning to allocate: the rewards on literal completions, and the rows both stages train on."""

from __future__ import annotations

import pytest

from app.bench.data import ROUTER_QUESTION_CHARS, Query, router_question
from app.pool import ModelEntry
from training.allocate import ROUTED_QUERY, grpo_rows, route_completion, sft_rows, task_prior
from training.rewards import AllocationFormatReward, AllocationReward, route_step

NAMES = ["Small-LM", "Big-LM"]
KW = {"models": [NAMES], "scores": [[0.0, 1.0]], "prices": [[0.1, 0.9]]}


def _entry(name: str, cost: float) -> ModelEntry:
    return ModelEntry(
        name=name, backend="recorded", outcomes="x.jsonl", price_in=cost, price_out=cost, descriptor="d"
    )


MODELS = [_entry("Small-LM", 0.1), _entry("Big-LM", 0.9)]


@pytest.mark.parametrize(
    ("completion", "chosen"),
    [
        ("<think>maths</think>\n<search> Big-LM: the question above </search>", "Big-LM"),
        ("  <think>maths</think><search> small-lm: q </search>\n", "Small-LM"),  # case, whitespace
        ("<search> Big-LM: q </search>", None),  # no thought
        ("<think> </think><search> Big-LM: q </search>", None),  # empty thought
        ("<think>x</think><search> GPT-9: q </search>", None),  # unknown model
        ("<think>x</think><search> Big-LM: </search>", None),  # empty query
        ("<think>x</think><search> Big-LM: q </search><information>y</information>", None),  # trailing
        ("<think>x</think><search> Big-LM: q </search><search> Small-LM: q </search>", None),  # two calls
        ("<think>x</think><answer> 4 </answer>", None),  # an answer is not an allocation
        ("<think>x<search> Big-LM: q </search></think><search> Big-LM: q </search>", None),  # nested
        ("<think>x</think><search> Big-LM: q", None),  # unclosed
    ],
)
def test_route_step(completion: str, chosen: str | None) -> None:
    assert route_step(completion, NAMES) == chosen


def test_allocation_reward_is_score_minus_lambda_normalised_price() -> None:
    reward = AllocationReward(lam=0.5)
    big = "<think>x</think><search> Big-LM: q </search>"
    small = "<think>x</think><search> Small-LM: q </search>"
    # Big: 1.0 − 0.5 · 0.9/0.9 = 0.5; Small: 0.0 − 0.5 · 0.1/0.9 = −0.0556
    assert reward(None, [big], **KW) == [0.5]
    assert reward(None, [small], **KW) == [pytest.approx(-0.5 * 0.1 / 0.9)]
    assert AllocationReward(lam=0.0)(None, [small], **KW) == [0.0]


def test_allocation_reward_reads_conversational_completions() -> None:
    completion = [{"role": "assistant", "content": "<think>x</think><search> Big-LM: q </search>"}]
    assert AllocationReward(lam=0.0)(None, [completion], **KW) == [1.0]


def test_malformed_completion_earns_format_penalty_and_no_allocation_reward() -> None:
    assert AllocationReward(lam=0.5)(None, ["Big-LM"], **KW) == [0.0]
    assert AllocationFormatReward()(None, ["Big-LM"], models=[NAMES]) == [-1.0]


def test_negative_lambda_is_refused() -> None:
    with pytest.raises(ValueError, match="lam"):
        AllocationReward(lam=-0.1)


def _query(i: int, task: str, small: float, big: float, question: str = "q") -> Query:
    return Query(id=str(i), task=task, question=f"{question} {i}", scores={"Small-LM": small, "Big-LM": big})


# Maths: Big-LM right 3/4, Small-LM 1/4. Trivia: both right 3/4, so the cheap one wins.
TRAIN = [
    _query(0, "gsm8k", 1.0, 1.0),
    _query(1, "gsm8k", 0.0, 1.0),
    _query(2, "gsm8k", 0.0, 1.0),
    _query(3, "gsm8k", 0.0, 0.0),
    _query(4, "trivia_qa", 1.0, 1.0),
    _query(5, "trivia_qa", 1.0, 0.0),
    _query(6, "trivia_qa", 0.0, 1.0),
    _query(7, "trivia_qa", 1.0, 1.0),
]


def test_task_prior_maximises_mean_reward_per_task() -> None:
    # gsm8k: Big 0.75 − λ·1 vs Small 0.25 − λ·0.11; trivia: both 0.75, Small is cheaper.
    assert {t: m.name for t, m in task_prior(TRAIN, MODELS, lam=0.1).items()} == {
        "gsm8k": "Big-LM",
        "trivia_qa": "Small-LM",
    }
    # A large enough λ makes the cheap model the better value even on maths (0.25 − 0.067 > 0.75 − 0.6).
    assert task_prior(TRAIN, MODELS, lam=0.6)["gsm8k"].name == "Small-LM"


def test_sft_rows_alternate_tasks_and_teach_one_route_step() -> None:
    rows = sft_rows(TRAIN, MODELS, lam=0.1, limit=4)
    assert len(rows) == 4
    targets = [row["completion"][0]["content"] for row in rows]
    assert [route_step(t, NAMES) for t in targets] == ["Big-LM", "Small-LM", "Big-LM", "Small-LM"]
    assert "a maths word problem" in targets[0] and "a trivia question" in targets[1]
    assert targets[0].endswith(f"<search> Big-LM: {ROUTED_QUERY} </search>")
    prompt = rows[0]["prompt"]
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert "Small-LM ($0.10/$0.10" in prompt[1]["content"] and "Big-LM ($0.90/$0.90" in prompt[1]["content"]


def test_grpo_rows_carry_aligned_names_scores_and_prices() -> None:
    rows = grpo_rows(TRAIN, MODELS, limit=3, seed=1)
    assert len(rows) == 3
    for row in rows:
        assert row["models"] == NAMES and row["prices"] == [0.1, 0.9]
        shown = row["prompt"][1]["content"]
        question = next(q for q in TRAIN if f"Question: {q.question}\n" in shown)
        assert row["scores"] == [question.scores["Small-LM"], question.scores["Big-LM"]]
        assert row["task"] == question.task


def test_router_question_is_cut_with_an_ellipsis() -> None:
    long = Query(id="1", task="t", question="x" * (ROUTER_QUESTION_CHARS + 50), scores={})
    assert router_question(long) == "x" * ROUTER_QUESTION_CHARS + " …"
    short = Query(id="2", task="t", question="  short?  ", scores={})
    assert router_question(short) == "short?"


def test_route_completion_round_trips_through_the_parser() -> None:
    assert route_step(route_completion("This is a trivia question.", "Small-LM"), NAMES) == "Small-LM"
