"""Router-R1's rule-based rewards on literal trajectories; expected values worked out by hand."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from training.rewards import (
    CostReward,
    FormatReward,
    OutcomeReward,
    RouterR1Reward,
    is_well_formed,
)

MODELS = ["Small-LM", "Big-LM"]

ROUTE_THEN_ANSWER = (
    "<think>I should ask a model.</think>"
    "<search> Small-LM: capital of France? </search>"
    "<information>Paris.</information>"
    "<think>Now I know.</think>"
    "<answer> Paris </answer>"
)
DIRECT = "<think>I know this.</think><answer> Paris </answer>"


@pytest.mark.parametrize(
    ("trajectory", "expected"),
    [
        (ROUTE_THEN_ANSWER, True),  # think, route, information, think, answer
        (DIRECT, True),  # think then answer
        ("  \n" + DIRECT + "\n", True),  # surrounding whitespace is stripped first
        (ROUTE_THEN_ANSWER.replace("Small-LM:", "small-lm:"), True),  # model names are case-insensitive
        (  # two routes, each with its information block
            "<think>a</think><search> Small-LM: q1 </search><information>i1</information>"
            "<think>b</think><search> Big-LM: q2 </search><information>i2</information>"
            "<think>c</think><answer> x </answer>",
            True,
        ),
        ("<answer> Paris </answer>", False),  # does not start with <think>
        ("I think <think>x</think><answer> Paris </answer>", False),  # text before <think>
        ("<think>x</think>", False),  # does not end with </answer>
        (DIRECT + " Hope that helps!", False),  # text trailing after </answer>
        ("<think>x</think><answer> a </answer><answer> b </answer>", False),  # two answers
        ("<think>x<answer> a </answer></think><answer> b </answer>", False),  # answer nested in think
        ("<think>x</think></think><answer> a </answer>", False),  # unbalanced: a stray closing tag
        ("<think>x<answer> a </answer>", False),  # unbalanced: <think> never closed
        ("<think>x</think><answer> a </answer></answer>", False),  # unbalanced: extra </answer>
        (ROUTE_THEN_ANSWER.replace("Small-LM:", "GPT-9:"), False),  # route call to an unknown model
        (ROUTE_THEN_ANSWER.replace("capital of France?", "   "), False),  # route call with an empty query
        (ROUTE_THEN_ANSWER.replace("Small-LM:", "Small-LM"), False),  # route call missing the colon
        (  # route call without its information block
            "<think>a</think><search> Small-LM: q </search><think>b</think><answer> x </answer>",
            False,
        ),
        (  # information without a route call before it
            "<think>a</think><information>i</information><think>b</think><answer> x </answer>",
            False,
        ),
        ("<think>  </think><answer> Paris </answer>", False),  # empty (whitespace-only) think
        (  # route call then answer directly: the route is left unanswered
            "<think>a</think><search> Small-LM: q </search><answer> x </answer>",
            False,
        ),
        ("", False),  # empty trajectory
    ],
)
def test_is_well_formed(trajectory: str, expected: bool) -> None:
    assert is_well_formed(trajectory, MODELS) is expected


def test_format_reward_on_plain_completions() -> None:
    completions = [
        ROUTE_THEN_ANSWER,  # well formed → 0
        DIRECT,  # well formed → 0
        "<answer> Paris </answer>",  # no <think> → -1
        DIRECT + " extra",  # trailing text → -1
        ROUTE_THEN_ANSWER.replace("Small-LM:", "GPT-9:"),  # unknown model → -1
    ]
    assert FormatReward(MODELS)(None, completions) == [0.0, 0.0, -1.0, -1.0, -1.0]


def test_format_reward_on_conversational_completions() -> None:
    completions = [
        [{"role": "assistant", "content": DIRECT}],  # one message, well formed → 0
        [  # split over two messages: the contents are joined → well formed → 0
            {"role": "assistant", "content": "<think>I know this.</think>"},
            {"role": "assistant", "content": "<answer> Paris </answer>"},
        ],
        [{"role": "assistant", "content": "Paris"}],  # no tags → -1
        [{"role": "assistant"}],  # no content at all → '' → -1
    ]
    assert FormatReward(MODELS)(None, completions) == [0.0, 0.0, -1.0, -1.0]


def test_format_reward_uses_per_row_models() -> None:
    route_big = ROUTE_THEN_ANSWER.replace("Small-LM:", "Big-LM:")
    reward = FormatReward(["Small-LM"])  # the constructor's list is overridden by the column
    result = reward(
        None,
        [ROUTE_THEN_ANSWER, ROUTE_THEN_ANSWER, route_big],
        models=[
            ["Small-LM"],  # row 0 may call Small-LM → 0
            ["Big-LM"],  # row 1 may not call Small-LM → -1
            ["Big-LM"],  # row 2 calls Big-LM, allowed → 0
        ],
    )
    assert result == [0.0, -1.0, 0.0]


def test_format_reward_default_models_without_column() -> None:
    route_big = ROUTE_THEN_ANSWER.replace("Small-LM:", "Big-LM:")
    # Only Small-LM is known: the Big-LM route is an unknown model → -1; a direct answer needs no model → 0.
    assert FormatReward(["Small-LM"])(None, [ROUTE_THEN_ANSWER, route_big, DIRECT]) == [0.0, -1.0, 0.0]
    # No models at all: any route call is to an unknown model.
    assert FormatReward()(None, [ROUTE_THEN_ANSWER, DIRECT]) == [-1.0, 0.0]


def test_outcome_reward_exact_match() -> None:
    completions = [
        "<think>x</think><answer> The Beatles </answer>",  # 'beatles' == alias 'beatles' → 1
        "<think>x</think><answer> the fab four! </answer>",  # 'fab four' == alias 'Fab Four' → 1
        "<think>x</think><answer> Rolling Stones </answer>",  # no alias matches → 0
        "<think>x</think> The Beatles",  # no <answer> → 0
        "<think>x</think><answer> The Beatles",  # unclosed <answer> → 0
        "<answer> wrong </answer><answer> Beatles </answer>",  # the last answer counts → 1
    ]
    answers = [["beatles", "Fab Four"]] * len(completions)
    assert OutcomeReward("em")(None, completions, answers=answers) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_outcome_reward_f1() -> None:
    completions = [
        "<answer> the eiffel tower paris </answer>",  # P=2/3, R=1 → 0.8
        "<answer> eiffel </answer>",  # vs 'eiffel tower' P=1,R=1/2 → 2/3; vs 'tour eiffel' also 2/3
        "<answer> Tour Eiffel </answer>",  # exact match of the second alias → 1
        "<answer> London </answer>",  # no overlap → 0
        "no answer tag",  # missing answer → 0
    ]
    answers = [["Eiffel Tower", "tour eiffel"]] * len(completions)
    assert OutcomeReward("f1")(None, completions, answers=answers) == pytest.approx(
        [0.8, 2 / 3, 1.0, 0.0, 0.0]
    )


@pytest.mark.parametrize(
    ("answer", "golds", "em", "f1", "em_unicode", "f1_unicode"),
    [
        # What Router-R1's qa_em.py returns (em_check; f1_score best over aliases), written out:
        ("yes it is", ["yes"], 0.0, 0.0, 0.0, 0.0),  # f1_score: gold 'yes' and pred != gold → 0 (SQuAD: 0.5)
        ("no", ["no way"], 0.0, 0.0, 0.0, 0.0),  # prediction 'no' != 'no way' → 0 (SQuAD: 2/3)
        ("Yes.", ["yes"], 1.0, 1.0, 1.0, 1.0),  # 'yes' == 'yes'
        ("«Paris»", ["Paris"], 0.0, 0.0, 1.0, 1.0),  # guillemets kept officially; lenient drops them
        ("１０００ people", ["1000 people"], 0.0, 0.5, 1.0, 1.0),  # fullwidth digits: only 'people' shared
        ("The", ["The"], 1.0, 0.0, 1.0, 0.0),  # articles only: EM '' == '', F1 has no tokens → 0
        ("Paris", "paris", 1.0, 1.0, 1.0, 1.0),  # a bare-string gold is one alias, as in em_check
    ],
)
def test_outcome_reward_matches_router_r1_qa_em(
    answer: str, golds: list[str], em: float, f1: float, em_unicode: float, f1_unicode: float
) -> None:
    completions = [f"<think>x</think><answer> {answer} </answer>"]
    assert OutcomeReward("em")(None, completions, answers=[golds]) == [em]
    assert OutcomeReward("f1")(None, completions, answers=[golds]) == [f1]
    assert OutcomeReward("em", "unicode")(None, completions, answers=[golds]) == [em_unicode]
    assert OutcomeReward("f1", normalize="unicode")(None, completions, answers=[golds]) == [f1_unicode]


def test_router_r1_reward_passes_the_normalisation_on() -> None:
    completions = ["<think>x</think><answer> «Paris» </answer>"]
    assert RouterR1Reward()(None, completions, answers=[["Paris"]], cost=[0.0]) == [0.0]  # wrong → format 0
    lenient = RouterR1Reward(normalize="unicode")
    assert lenient(None, completions, answers=[["Paris"]], cost=[0.0]) == [1.0]  # (1 + 0)·(1 − 0)
    with pytest.raises(ValueError, match="normalize"):
        OutcomeReward("em", "nfkc")  # type: ignore[arg-type]


def test_outcome_reward_conversational() -> None:
    completions = [[{"role": "assistant", "content": "<think>x</think><answer> Paris </answer>"}]]
    assert OutcomeReward()(None, completions, answers=[["paris"]]) == [1.0]  # 'paris' == 'paris'


@pytest.mark.parametrize("metric", ["EM", "accuracy", ""])
def test_outcome_reward_rejects_unknown_metric(metric: str) -> None:
    with pytest.raises(ValueError, match="metric"):
        OutcomeReward(metric)


def test_cost_reward_percentiles_by_hand() -> None:
    # sqrt → [0, .01, .02, .03]; n=4: p5 at 3·0.05=0.15 → 0 + .01·.15 = .0015;
    # p95 at 3·0.95=2.85 → .02 + .01·.85 = .0285; spread .027.
    # 0   → (0-.0015)/.027 < 0 → clamp 0 → 1
    # .01 → .0085/.027 = 17/54 → 1 - 17/54 = 37/54
    # .02 → .0185/.027 = 37/54 → 17/54
    # .03 → > 1 → clamp 1 → 0
    reward = CostReward(window=16)
    result = reward(None, ["a", "b", "c", "d"], cost=[0.0, 0.0001, 0.0004, 0.0009])
    assert result == pytest.approx([1.0, 37 / 54, 17 / 54, 0.0])


def test_cost_reward_order_does_not_matter() -> None:
    # Same window as above, shuffled: each rollout keeps its own reward.
    result = CostReward(window=16)(None, list("abcd"), cost=[0.0009, 0.0, 0.0004, 0.0001])
    assert result == pytest.approx([0.0, 1.0, 17 / 54, 37 / 54])


def test_cost_reward_negative_cost_is_zero() -> None:
    # max(-1, 0) = 0 → sqrt [0, .01]; p5 = .0005, p95 = .0095 → 0 clamps to 1, .01 clamps to 0.
    assert CostReward()(None, ["a", "b"], cost=[-1.0, 0.0001]) == pytest.approx([1.0, 0.0])


@pytest.mark.parametrize(
    "costs",
    [
        [0.0004, 0.0004, 0.0004],  # constant window: no spread → 0.5 each
        [0.0, 0.0],  # all free: no spread → 0.5 each
        [0.123],  # a single rollout: p5 == p95 → 0.5
    ],
)
def test_cost_reward_constant_window(costs: list[float]) -> None:
    assert CostReward()(None, ["x"] * len(costs), cost=costs) == [0.5] * len(costs)


def test_cost_reward_window_slides() -> None:
    reward = CostReward(window=4)
    # Call 1: window [0, .01]; p5 at 1·.05 → .0005, p95 at .95 → .0095; 0 → 1, .01 → 0.
    assert reward(None, ["a", "b"], cost=[0.0, 0.0001]) == pytest.approx([1.0, 0.0])
    # Call 2: window [0, .01, .02, .03] (the previous batch too), as in the by-hand test:
    # .02 → 17/54, .03 → 0.  On its own this batch would give [1.0, 0.0].
    assert reward(None, ["c", "d"], cost=[0.0004, 0.0009]) == pytest.approx([17 / 54, 0.0])
    # Call 3: maxlen 4 drops the 0: window [.01, .02, .03, .02] sorted [.01, .02, .02, .03];
    # p5 at .15 → .01 + .01·.15 = .0115; p95 at 2.85 → .02 + .01·.85 = .0285; spread .017;
    # .02 → .0085/.017 = .5 → 0.5.
    assert reward(None, ["e"], cost=[0.0004]) == pytest.approx([0.5])
    assert list(reward.history) == pytest.approx([0.01, 0.02, 0.03, 0.02])


def test_cost_reward_custom_percentiles() -> None:
    # low=0, high=1: plain min-max over [0, .01, .02, .03] → 1 - t/.03.
    reward = CostReward(window=8, low=0.0, high=1.0)
    result = reward(None, list("abcd"), cost=[0.0, 0.0001, 0.0004, 0.0009])
    assert result == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])


def _r1_batch() -> tuple[list[str], list[list[str]], list[float]]:
    good = "<think>x</think><answer> Paris </answer>"
    bad_format = "<answer> Paris </answer>"  # no <think> → format -1
    wrong = "<think>x</think><answer> Lyon </answer>"
    completions = [good, good, bad_format, wrong, "Lyon"]
    answers = [["Paris"]] * 5
    # sqrt [0, .03, 0, .03, 0], sorted [0, 0, 0, .03, .03]; p5 at 4·.05=.2 → 0; p95 at 3.8 → .03;
    # cost rewards [1, 0, 1, 0, 1].
    costs = [0.0, 0.0009, 0.0, 0.0009, 0.0]
    return completions, answers, costs


def test_router_r1_reward_combines_with_alpha() -> None:
    completions, answers, costs = _r1_batch()
    reward = RouterR1Reward(["Small-LM"], alpha=0.3)
    result = reward(None, completions, answers=answers, cost=costs)
    assert result == pytest.approx(
        [
            1.0,  # correct, format 0, cost 1: (1+0)·0.7 + 1·0.3 = 1.0
            0.7,  # correct, format 0, cost 0: (1+0)·0.7 + 0·0.3 = 0.7
            0.3,  # correct, format -1, cost 1: (1-1)·0.7 + 1·0.3 = 0.3
            0.0,  # wrong, well formed: format = 0
            -1.0,  # wrong, malformed: format = -1
        ]
    )


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (0.0, [1.0, 1.0, 0.0, 0.0, -1.0]),  # α=0: outcome + format only
        (1.0, [1.0, 0.0, 1.0, 0.0, -1.0]),  # α=1: cost only when correct, format otherwise
    ],
)
def test_router_r1_reward_alpha_bounds(alpha: float, expected: list[float]) -> None:
    completions, answers, costs = _r1_batch()
    result = RouterR1Reward(["Small-LM"], alpha=alpha)(None, completions, answers=answers, cost=costs)
    assert result == pytest.approx(expected)


def test_router_r1_reward_partial_f1_counts_as_correct() -> None:
    # f1 of 'the eiffel tower paris' vs 'Eiffel Tower' = 0.8; single cost → 0.5;
    # (0.8 + 0)·0.7 + 0.5·0.3 = 0.56 + 0.15 = 0.71.
    reward = RouterR1Reward([], alpha=0.3, metric="f1")
    completion = "<think>x</think><answer> the eiffel tower paris </answer>"
    assert reward(None, [completion], answers=[["Eiffel Tower"]], cost=[0.001]) == pytest.approx([0.71])


@pytest.mark.parametrize("alpha", [-0.1, 1.1, 2.0])
def test_router_r1_reward_rejects_alpha_outside_unit_interval(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        RouterR1Reward(MODELS, alpha=alpha)


@pytest.mark.parametrize(
    ("reward", "name"),
    [
        (FormatReward(MODELS), "format"),
        (OutcomeReward("f1"), "outcome"),
        (CostReward(window=8), "cost"),
        (RouterR1Reward(MODELS, alpha=0.3), "router_r1"),
    ],
)
def test_rewards_have_a_name_and_pickle(reward: Any, name: str) -> None:
    assert reward.__name__ == name
    kwargs: dict[str, Any] = {"answers": [["Paris"], ["Paris"]], "cost": [0.0, 0.0009]}
    completions = [DIRECT, "<answer> Lyon </answer>"]
    before = reward(None, completions, **kwargs)
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == name
    assert type(clone) is type(reward)
    # The clone carries the same state (cost window included) and scores the next batch alike.
    assert clone(None, completions, **kwargs) == reward(None, completions, **kwargs)
    assert len(before) == 2
