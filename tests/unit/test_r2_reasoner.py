"""R2-Reasoner over a scripted pool: parallel waves, fallbacks, allocation, escalation, budget, storage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from app.config import Settings
from app.pool import Pool
from app.service import RouteGraphService
from graphs import answers
from graphs.hops import Hop
from graphs.r2_reasoner import prompts
from graphs.r2_reasoner.allocation import model_for_level, next_pricier
from graphs.r2_reasoner.graph import graph
from graphs.r2_reasoner.state import R2Context
from storage import db
from tests.fakes import BIG, ROUTER, SMALL, fake, make_fake_pool, message_text

MID = "Mid-LM"
THREE_TIERS = {SMALL: (0.10, 0.20), MID: (0.50, 1.00), BIG: (1.00, 2.00)}
QUESTION = "Tom has 2+3 apples and Ann has 4+5 apples. How many apples do they have together?"


def plan(*items: tuple[str, str, list[str]]) -> str:
    return json.dumps({"subtasks": [{"id": i, "text": t, "depends_on": d} for i, t, d in items]})


STEPS = plan(("1", "What is 2+3?", []), ("2", "What is 4+5?", []))
"""Two independent steps; the plan's third subtask is the question itself, given both answers."""
FINAL = {"id": "3", "text": QUESTION, "depends_on": ["1", "2"]}
ARITHMETIC = {"Now answer: Tom": "5 + 9 = 14\nAnswer: 14", "2+3": "5", "4+5": "9"}
"""Replies by content: the question (asked last, after the steps' answers) and each step."""


def by_content(answers: dict[str, str], default: str = "?") -> Callable[[list[BaseMessage]], str]:
    """A scripted reply that answers by what the last message contains (parallel calls come in any order)."""

    def reply(messages: list[BaseMessage]) -> str:
        text = message_text(messages[-1])
        return next((a for key, a in answers.items() if key in text), default)

    return reply


def run_graph(pool: Pool, question: str = QUESTION, **context: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {"question": question}
    if "subtasks" in context:
        inputs["subtasks"] = context.pop("subtasks")
    context.setdefault("allocation", "cheapest")
    return asyncio.run(graph.ainvoke(inputs, context=R2Context(pool=pool, **context)))


def nodes(result: dict[str, Any]) -> list[str]:
    return [hop.node for hop in result["hops"]]


def executes(result: dict[str, Any]) -> list[Hop]:
    return [h for h in result["hops"] if h.node == "execute"]


def test_compiled_graph_is_a_runnable() -> None:
    assert isinstance(graph, Runnable)
    assert graph.name == "r2-reasoner"
    assert {"decompose", "allocate", "wave", "execute", "aggregate"} <= set(graph.get_graph().nodes)


def test_independent_subtasks_run_concurrently_and_the_question_after_both() -> None:
    small = by_content(ARITHMETIC)
    pool = make_fake_pool({ROUTER: [STEPS], SMALL: [small] * 3}, delay_s={SMALL: 0.3, ROUTER: 0.0, BIG: 0.0})
    result = run_graph(pool)

    assert result["answer"] == "14" and result.get("error") is None
    # The question's number, as its last subtask stated it, is the answer: no aggregator call.
    assert nodes(result) == ["decompose", "allocate", "execute", "execute", "execute"]
    assert len(fake(pool, ROUTER).calls) == 1
    first, second, third = executes(result)
    assert {first.subtask_id, second.subtask_id} == {"1", "2"} and third.subtask_id == "3"
    # Overlapping intervals: each of the two started before the other ended.
    assert first.started_at < second.started_at + second.latency_s
    assert second.started_at < first.started_at + first.latency_s
    assert abs(first.started_at - second.started_at) < 0.15
    assert third.started_at >= max(h.started_at + h.latency_s for h in (first, second)) - 0.01
    # The question itself comes last, whole, with both steps' answers.
    assert third.sub_query is not None and "Answer: 5" in third.sub_query and "Answer: 9" in third.sub_query
    assert third.sub_query.endswith(f"Now answer: {QUESTION}")
    assert fake(pool, SMALL).calls[2].last_text == third.sub_query
    decomposed = result["hops"][0]
    assert decomposed.model == ROUTER and decomposed.error is None
    assert decomposed.detail["subtasks"] == [*json.loads(STEPS)["subtasks"], FINAL]
    assert result["allocation"] == {"1": SMALL, "2": SMALL, "3": SMALL}
    assert [s.id for s in result["plan"]] == ["1", "2", "3"]


def test_a_span_is_composed_by_the_aggregator_from_every_answer() -> None:
    steps = plan(("1", "Who wrote Hamlet?", []))
    pool = make_fake_pool(
        {ROUTER: [steps, "Shakespeare"], SMALL: ["Shakespeare", "It was William Shakespeare."]}
    )
    result = run_graph(pool, question="Which playwright wrote Hamlet?")

    assert nodes(result) == ["decompose", "allocate", "execute", "execute", "aggregate"]
    aggregate_prompt = fake(pool, ROUTER).calls[1].last_text
    assert "shortest answer" in aggregate_prompt
    assert (
        "Answer: Shakespeare" in aggregate_prompt
        and "Answer: It was William Shakespeare." in aggregate_prompt
    )
    assert result["answer"] == "Shakespeare"


def test_a_later_subtask_is_given_what_an_earlier_reply_states_not_its_working() -> None:
    first = prompts.Subtask(id="1", text="What is 2+3?")
    working = "2 plus 3 makes 5.\nAnswer: 5"
    asked = prompts.subtask_prompt(
        prompts.Subtask(id="2", text="Add 4.", depends_on=["1"]), [(first, working)]
    )
    assert asked == "Known from earlier steps:\n- What is 2+3? Answer: 5\nNow answer: Add 4."
    long_reply = " ".join(["words"] * 40)  # no answer line: the reply itself is what the step said
    assert long_reply in prompts.subtask_prompt(prompts.Subtask(id="2", text="x?"), [(first, long_reply)])


def test_the_question_is_the_last_subtask_whatever_the_router_writes() -> None:
    steps = [prompts.Subtask(id="2", text="a?"), prompts.Subtask(id="3", text="b?", depends_on=["2"])]
    question = "Which is red?\nA. sky\nB. blood"
    final = prompts.with_question(steps, question)[-1]
    assert final == prompts.Subtask(id="4", text=question, depends_on=["2", "3"])  # a free id, choices kept
    assert prompts.with_question([], f" {question} ") == [prompts.Subtask(id="1", text=question)]
    assert prompts.parse_decomposition(json.dumps({"subtasks": []}), 4) == []  # a simple question: no steps


def test_sequential_mode_runs_one_subtask_per_wave() -> None:
    small = by_content(ARITHMETIC)
    pool = make_fake_pool({ROUTER: [STEPS], SMALL: [small] * 3}, delay_s={SMALL: 0.1})
    result = run_graph(pool, parallel=False)

    first, second, third = executes(result)
    assert [first.subtask_id, second.subtask_id, third.subtask_id] == ["1", "2", "3"]
    assert second.started_at >= first.started_at + first.latency_s - 0.01
    assert result["answer"] == "14"


MALFORMED = {
    "not json": "Sure! First find the apples, then add them.",
    "cycle": plan(("1", "a?", ["2"]), ("2", "b?", ["1"])),
    "unknown dependency": plan(("1", "a?", []), ("2", "b?", ["7"])),
    "too many": plan(*[(str(i), f"q{i}?", []) for i in range(1, 6)]),
    "empty text": plan(("1", "a?", []), ("2", "   ", ["1"])),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_decomposition_falls_back_to_a_direct_answer(kind: str) -> None:
    pool = make_fake_pool({ROUTER: [MALFORMED[kind], "9"], SMALL: ["9 apples"]})
    result = run_graph(pool, allocation="router", max_subtasks=4)

    assert nodes(result) == ["decompose", "allocate", "execute"]  # its number is the answer: no aggregate
    decomposed, allocated, executed = result["hops"]
    assert decomposed.error and decomposed.error.startswith("malformed:"), decomposed.error
    assert decomposed.detail["fallback"] == [{"id": "1", "text": QUESTION, "depends_on": []}]
    assert result["error"] and "answered directly" in result["error"]
    # No router allocation call: the question goes straight to the default (cheapest) model.
    assert allocated.model is None and allocated.detail["strategy"] == "fallback"
    assert allocated.detail["allocation"] == {"1": SMALL}
    assert (executed.model, executed.sub_query, executed.response) == (SMALL, QUESTION, "9 apples")
    assert len(fake(pool, ROUTER).calls) == 1  # decompose only
    assert result["answer"] == "9"


def test_decomposition_errors_name_the_problem() -> None:
    expected = {
        "not json": "not JSON",
        "cycle": "cycle",
        "unknown dependency": "unknown id",
        "too many": "too many subtasks",
        "empty text": "empty text",
    }
    for kind, text in MALFORMED.items():
        with pytest.raises(prompts.DecompositionError, match=expected[kind]):
            prompts.parse_decomposition(text, 4)


def test_single_subtask_and_fenced_json_are_fine() -> None:
    fenced = "```json\n" + plan(("1", "What is the capital of France?", [])) + "\n```"
    assert prompts.parse_decomposition(fenced, 4) == [
        prompts.Subtask(id="1", text="What is the capital of France?")
    ]


def test_router_allocation_by_level_and_by_name() -> None:
    ask2 = plan(("1", "a?", []), ("2", "b?", []))  # and the question, "3"
    pool = make_fake_pool(
        {
            ROUTER: [ask2, json.dumps({"1": "easy", "2": "medium", "3": "big-lm"}), "x"],
            SMALL: ["a"],
            MID: ["b"],
            BIG: ["c"],
        },
        models=THREE_TIERS,
    )
    result = run_graph(pool, question="Who is it?", allocation="router")

    assert result["allocation"] == {"1": SMALL, "2": MID, "3": BIG}
    allocated = result["hops"][1]
    assert allocated.model == ROUTER and allocated.error is None
    assert allocated.detail["allocation"] == {"1": SMALL, "2": MID, "3": BIG}
    assert allocated.detail["choices"] == {"1": "easy", "2": "medium", "3": "big-lm"}
    assert {h.subtask_id: h.model for h in executes(result)} == {"1": SMALL, "2": MID, "3": BIG}
    # The router saw the candidates cheapest first.
    text = fake(pool, ROUTER).calls[1].last_text
    assert text.index(SMALL) < text.index(MID) < text.index(BIG)


def test_levels_map_onto_price_tiers() -> None:
    three = make_fake_pool(models=THREE_TIERS)
    assert [model_for_level(three, lv).name for lv in prompts.LEVELS] == [SMALL, MID, BIG]
    two = make_fake_pool()
    assert [model_for_level(two, lv).name for lv in prompts.LEVELS] == [SMALL, SMALL, BIG]
    assert next_pricier(three, SMALL) is not None and next_pricier(three, SMALL).name == MID  # type: ignore[union-attr]
    assert next_pricier(three, BIG) is None


@pytest.mark.parametrize(
    "reply", [json.dumps({"1": "genius", "2": "hard"}), json.dumps({"2": "hard"}), "no idea"]
)
def test_unusable_router_choices_go_to_the_default_and_are_recorded(reply: str) -> None:
    ask2 = plan(("1", "a?", []), ("2", "b?", []))
    pool = make_fake_pool({ROUTER: [ask2, reply, "x"], SMALL: ["a", "b", "c"], BIG: ["b"]})
    result = run_graph(pool, question="Who is it?", allocation="router")

    allocated = result["hops"][1]
    assert result["allocation"]["1"] == SMALL
    assert allocated.error and "subtask 1" in allocated.error and f"default {SMALL}" in allocated.error
    assert "1" in allocated.detail["defaulted"]  # type: ignore[operator]
    if reply != "no idea":
        assert result["allocation"]["2"] == BIG and "2" not in allocated.detail["defaulted"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("strategy", "expected", "recorded"),
    [
        ("cheapest", SMALL, False),
        ("strongest", BIG, False),
        (f"fixed:{MID}", MID, False),
        ("fixed:Nope-LM", SMALL, True),
    ],
)
def test_static_allocation_strategies(strategy: str, expected: str, recorded: bool) -> None:
    ask2 = plan(("1", "a?", []), ("2", "b?", []))
    pool = make_fake_pool(
        {ROUTER: [ask2, "x"], SMALL: ["a", "b", "c"], MID: ["a", "b", "c"], BIG: ["a", "b", "c"]},
        models=THREE_TIERS,
    )
    result = run_graph(pool, question="Who is it?", allocation=strategy)

    assert result["allocation"] == {"1": expected, "2": expected, "3": expected}
    allocated = result["hops"][1]
    assert allocated.model is None and allocated.cost == 0  # no router call
    assert allocated.detail["strategy"] == strategy
    assert bool(allocated.error) is recorded
    if recorded:
        assert "unknown model 'Nope-LM'" in (allocated.error or "")
    assert {h.model for h in executes(result)} == {expected}


def test_escalation_reruns_once_on_the_next_tier() -> None:
    ask2 = plan(("1", "Capital of France?", []), ("2", "Capital of Spain?", []))
    small = by_content(
        {"Now answer": "Paris and Madrid", "France": "I'm sorry, I cannot help with that.", "Spain": "Madrid"}
    )
    pool = make_fake_pool(
        {ROUTER: [ask2, "Paris"], SMALL: [small] * 3, MID: ["As an AI I cannot know."], BIG: []},
        models=THREE_TIERS,
    )
    result = run_graph(pool, question="Which capitals?", escalate=True)

    runs = executes(result)
    assert [(h.subtask_id, h.model) for h in runs if h.subtask_id == "1"] == [("1", SMALL), ("1", MID)]
    refused, rerun = (h for h in runs if h.subtask_id == "1")
    assert refused.detail["failed_check"] == "refusal"
    assert rerun.detail["escalated_from"] == SMALL and rerun.detail["failed_check"] == "refusal"
    assert [h.model for h in runs if h.subtask_id in ("2", "3")] == [SMALL, SMALL]  # good answers: not re-run
    assert fake(pool, BIG).calls == []  # exactly once: the failed re-run is not escalated again
    assert fake(pool, MID).calls[0].last_text == "Capital of France?"


def test_no_escalation_unless_enabled() -> None:
    pool = make_fake_pool({ROUTER: [plan(("1", "a?", [])), "x"], SMALL: ["", "x"], BIG: []})
    result = run_graph(pool, question="Who is it?")
    assert [h.model for h in executes(result)] == [SMALL, SMALL]
    assert executes(result)[0].detail["failed_check"] == "empty"


def test_budget_refusal_is_recorded_and_the_run_continues() -> None:
    ask2 = plan(("1", "a?", []), ("2", "b?", []))
    pool = make_fake_pool({ROUTER: [ask2, "x"], SMALL: ["a", "c"], BIG: []}, router_prices=(0.0, 0.0))
    # Room for one Small-LM call: the second subtask of the same wave is refused (budget reservation).
    one_call = 1.5 * pool.get(SMALL).cost_bound(prompts.EXECUTE_SYSTEM + "a?", 64)
    result = run_graph(pool, question="Who is it?", budget_usd=one_call, response_max_tokens=64)

    first, second, question = executes(result)
    assert first.error is None and first.model == SMALL
    assert second.error and second.error.startswith("budget exceeded"), second.error
    assert (second.cost, second.input_tokens, second.output_tokens) == (0.0, 0, 0)
    # What the first call left over (it cost less than its bound) still covers the question.
    assert question.error is None and "(no answer: budget exceeded)" in (question.sub_query or "")
    assert len(fake(pool, SMALL).calls) == 2
    assert "budget exceeded" in fake(pool, ROUTER).calls[-1].last_text
    assert result["answer"] == "x"


def test_endpoint_error_on_a_subtask_becomes_a_note() -> None:
    ask2 = plan(("1", "a?", []), ("2", "b?", ["1"]))
    down = openai.APIConnectionError(request=httpx.Request("POST", "http://fake.invalid/v1/chat/completions"))
    pool = make_fake_pool({ROUTER: [ask2, "x"], SMALL: [down, "b", "c"], BIG: []})
    result = run_graph(pool, question="Who is it?")

    failed, ok, _question = executes(result)
    assert failed.error and "cannot connect" in failed.error and failed.cost == 0
    assert ok.error is None and ok.sub_query and "(no answer: Small-LM failed" in ok.sub_query
    assert result["answer"] == "x"


def test_given_subtasks_skip_the_decompose_call() -> None:
    given = [{"id": str(i), "text": f"q{i}?", "depends_on": []} for i in range(1, 5)]
    pool = make_fake_pool({ROUTER: ["done"], SMALL: ["a"] * 5})
    result = run_graph(pool, question="Four things?", subtasks=given)

    decomposed = result["hops"][0]
    assert decomposed.model is None and decomposed.detail["given"] is True
    assert len(executes(result)) == 5 and len(fake(pool, ROUTER).calls) == 1  # the four, then the question


def test_self_hosted_router_gets_json_schema_and_answer_grammar() -> None:
    base = make_fake_pool({ROUTER: [STEPS, json.dumps({"1": "easy", "2": "easy", "3": "hard"}), "14"]})
    fake(base, SMALL).replies = [by_content(ARITHMETIC)] * 2
    fake(base, BIG).replies = ["I would add them."]  # no number stated: the aggregator answers
    pool = base.with_router(base.router.model_copy(update={"backend": "llamacpp", "gguf": "x"}))
    result = run_graph(pool, allocation="router")
    assert result["answer"] == "14"

    decompose_call, allocate_call, aggregate_call = fake(pool, ROUTER).calls
    assert decompose_call.kwargs["extra_body"] == {"json_schema": prompts.decomposition_schema(4)}
    schema = allocate_call.kwargs["extra_body"]["json_schema"]
    assert schema["required"] == ["1", "2", "3"]
    assert aggregate_call.kwargs["extra_body"] == {"grammar": answers.answer_grammar("number", [])}
    vllm = base.with_router(base.router.model_copy(update={"backend": "vllm", "hf_model": "x"}))
    fake(vllm, ROUTER).replies.append(plan(("1", "a?", [])))
    fake(vllm, ROUTER).replies.append("x")
    fake(vllm, SMALL).replies.append("a")
    run_graph(vllm, question="Who is it?")
    assert fake(vllm, ROUTER).calls[-2].kwargs["extra_body"] == {
        "structured_outputs": {"json": prompts.decomposition_schema(4)}
    }


def test_service_stores_every_hop_and_totals(tmp_path: Path) -> None:
    small = by_content(ARITHMETIC)
    pool = make_fake_pool(
        {
            ROUTER: [STEPS, json.dumps({"1": "easy", "2": "easy", "3": "hard"}), "14"],
            SMALL: [small] * 2,
            BIG: [small],
        },
        delay_s={SMALL: 0.1},
    )
    settings = Settings(database_url=f"sqlite:///{tmp_path / 't.db'}")
    with RouteGraphService.create(settings, pool=pool, start_servers=False) as service:
        result = service.ask(QUESTION, graph="r2-reasoner")
        assert result.status == "ok" and result.answer == "14" and result.error is None
        run = service.get_run(result.run_id)
        assert run is not None and run.graph == "r2-reasoner"
        stored = [h.node for h in run.hops]
        assert stored == ["decompose", "allocate", "execute", "execute", "execute"]
        assert sorted(h.subtask_id for h in run.hops if h.node == "execute") == ["1", "2", "3"]
        assert run.total_cost == pytest.approx(sum(h.cost for h in run.hops)) and run.total_cost > 0
        assert run.input_tokens == sum(h.input_tokens for h in run.hops)
        assert run.output_tokens == sum(h.output_tokens for h in run.hops)
        assert run.hops[1].detail["allocation"] == {"1": SMALL, "2": SMALL, "3": BIG}
        assert run.hops[0].detail["subtasks"][2]["depends_on"] == ["1", "2"]
        assert result.to_json_dict()["hops"][0]["node"] == "decompose"
        assert db.get_run(service.sessions, result.run_id) is not None


def test_service_rejects_an_unknown_graph(tmp_path: Path) -> None:
    from app.service import GRAPHS, QuestionError

    assert "r2-reasoner" in GRAPHS
    settings = Settings(database_url=f"sqlite:///{tmp_path / 't.db'}")
    with (
        RouteGraphService.create(settings, pool=make_fake_pool(), start_servers=False) as service,
        pytest.raises(QuestionError, match="r2-reasoner"),
    ):
        service.ask("q?", graph="r3")
