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


THREE = plan(
    ("1", "What is 2+3?", []),
    ("2", "What is 4+5?", []),
    ("3", "Add the two results.", ["1", "2"]),
)


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


def test_independent_subtasks_run_concurrently_and_the_dependent_after_both() -> None:
    small = by_content({"Add the two results": "14", "2+3": "5", "4+5": "9"})
    pool = make_fake_pool(
        {ROUTER: [THREE, "14"], SMALL: [small] * 3}, delay_s={SMALL: 0.3, ROUTER: 0.0, BIG: 0.0}
    )
    result = run_graph(pool)

    assert result["answer"] == "14" and result.get("error") is None
    assert nodes(result) == ["decompose", "allocate", "execute", "execute", "execute", "aggregate"]
    first, second, third = executes(result)
    assert {first.subtask_id, second.subtask_id} == {"1", "2"} and third.subtask_id == "3"
    # Overlapping intervals: each of the two started before the other ended.
    assert first.started_at < second.started_at + second.latency_s
    assert second.started_at < first.started_at + first.latency_s
    assert abs(first.started_at - second.started_at) < 0.15
    assert third.started_at >= max(h.started_at + h.latency_s for h in (first, second)) - 0.01
    # The dependent subtask sees both answers.
    assert third.sub_query is not None and "Answer: 5" in third.sub_query and "Answer: 9" in third.sub_query
    assert fake(pool, SMALL).calls[2].last_text == third.sub_query
    decomposed = result["hops"][0]
    assert decomposed.model == ROUTER and decomposed.error is None
    assert decomposed.detail["subtasks"] == json.loads(THREE)["subtasks"]
    assert result["allocation"] == {"1": SMALL, "2": SMALL, "3": SMALL}
    assert [s.id for s in result["plan"]] == ["1", "2", "3"]
    # The aggregator is asked for a number (math question) and sees every subtask answer.
    aggregate_prompt = fake(pool, ROUTER).calls[1].last_text
    assert "final number only" in aggregate_prompt and "Answer: 14" in aggregate_prompt


def test_sequential_mode_runs_one_subtask_per_wave() -> None:
    small = by_content({"Add the two results": "14", "2+3": "5", "4+5": "9"})
    pool = make_fake_pool({ROUTER: [THREE, "14"], SMALL: [small] * 3}, delay_s={SMALL: 0.1})
    result = run_graph(pool, parallel=False)

    first, second, third = executes(result)
    assert [first.subtask_id, second.subtask_id, third.subtask_id] == ["1", "2", "3"]
    assert second.started_at >= first.started_at + first.latency_s - 0.01
    assert result["answer"] == "14"


MALFORMED = {
    "not json": "Sure! First find the apples, then add them.",
    "cycle": plan(("1", "a?", ["2"]), ("2", "b?", ["1"])),
    "unknown dependency": plan(("1", "a?", []), ("2", "b?", ["7"])),
    "zero subtasks": json.dumps({"subtasks": []}),
    "too many": plan(*[(str(i), f"q{i}?", []) for i in range(1, 6)]),
    "empty text": plan(("1", "a?", []), ("2", "   ", ["1"])),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_decomposition_falls_back_to_a_direct_answer(kind: str) -> None:
    pool = make_fake_pool({ROUTER: [MALFORMED[kind], "9"], SMALL: ["9 apples"]})
    result = run_graph(pool, allocation="router", max_subtasks=4)

    assert nodes(result) == ["decompose", "allocate", "execute", "aggregate"]
    decomposed, allocated, executed, _ = result["hops"]
    assert decomposed.error and decomposed.error.startswith("malformed:"), decomposed.error
    assert decomposed.detail["fallback"] == [{"id": "1", "text": QUESTION, "depends_on": []}]
    assert result["error"] and "answered directly" in result["error"]
    # No router allocation call: the question goes straight to the default (cheapest) model.
    assert allocated.model is None and allocated.detail["strategy"] == "fallback"
    assert allocated.detail["allocation"] == {"1": SMALL}
    assert (executed.model, executed.sub_query, executed.response) == (SMALL, QUESTION, "9 apples")
    assert len(fake(pool, ROUTER).calls) == 2  # decompose, aggregate
    assert result["answer"] == "9"


def test_decomposition_errors_name_the_problem() -> None:
    expected = {
        "not json": "not JSON",
        "cycle": "cycle",
        "unknown dependency": "unknown id",
        "zero subtasks": "zero subtasks",
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
    ask3 = plan(("1", "a?", []), ("2", "b?", []), ("3", "c?", []))
    pool = make_fake_pool(
        {
            ROUTER: [ask3, json.dumps({"1": "easy", "2": "medium", "3": "big-lm"}), "x"],
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
    pool = make_fake_pool({ROUTER: [ask2, reply, "x"], SMALL: ["a", "b"], BIG: ["b"]})
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
        {ROUTER: [ask2, "x"], SMALL: ["a", "b"], MID: ["a", "b"], BIG: ["a", "b"]}, models=THREE_TIERS
    )
    result = run_graph(pool, question="Who is it?", allocation=strategy)

    assert result["allocation"] == {"1": expected, "2": expected}
    allocated = result["hops"][1]
    assert allocated.model is None and allocated.cost == 0  # no router call
    assert allocated.detail["strategy"] == strategy
    assert bool(allocated.error) is recorded
    if recorded:
        assert "unknown model 'Nope-LM'" in (allocated.error or "")
    assert {h.model for h in executes(result)} == {expected}


def test_escalation_reruns_once_on_the_next_tier() -> None:
    ask2 = plan(("1", "Capital of France?", []), ("2", "Capital of Spain?", []))
    small = by_content({"France": "I'm sorry, I cannot help with that.", "Spain": "Madrid"})
    pool = make_fake_pool(
        {ROUTER: [ask2, "Paris"], SMALL: [small, small], MID: ["As an AI I cannot know."], BIG: []},
        models=THREE_TIERS,
    )
    result = run_graph(pool, question="Which capitals?", escalate=True)

    runs = executes(result)
    assert [(h.subtask_id, h.model) for h in runs if h.subtask_id == "1"] == [("1", SMALL), ("1", MID)]
    refused, rerun = (h for h in runs if h.subtask_id == "1")
    assert refused.detail["failed_check"] == "refusal"
    assert rerun.detail["escalated_from"] == SMALL and rerun.detail["failed_check"] == "refusal"
    assert [h.model for h in runs if h.subtask_id == "2"] == [SMALL]  # a good answer is not re-run
    assert fake(pool, BIG).calls == []  # exactly once: the failed re-run is not escalated again
    assert fake(pool, MID).calls[0].last_text == "Capital of France?"


def test_no_escalation_unless_enabled() -> None:
    pool = make_fake_pool({ROUTER: [plan(("1", "a?", [])), "x"], SMALL: [""], BIG: []})
    result = run_graph(pool, question="Who is it?")
    assert [h.model for h in executes(result)] == [SMALL]
    assert executes(result)[0].detail["failed_check"] == "empty"


def test_budget_refusal_is_recorded_and_the_run_continues() -> None:
    ask2 = plan(("1", "a?", []), ("2", "b?", []))
    pool = make_fake_pool({ROUTER: [ask2, "x"], SMALL: ["a"], BIG: []}, router_prices=(0.0, 0.0))
    # Room for one Small-LM call: the second subtask of the same wave is refused (budget reservation).
    one_call = 1.5 * pool.get(SMALL).cost_bound(prompts.EXECUTE_SYSTEM + "a?", 64)
    result = run_graph(pool, question="Who is it?", budget_usd=one_call, response_max_tokens=64)

    first, second = executes(result)
    assert first.error is None and first.model == SMALL
    assert second.error and second.error.startswith("budget exceeded"), second.error
    assert (second.cost, second.input_tokens, second.output_tokens) == (0.0, 0, 0)
    assert len(fake(pool, SMALL).calls) == 1
    assert "budget exceeded" in fake(pool, ROUTER).calls[-1].last_text
    assert result["answer"] == "x"


def test_endpoint_error_on_a_subtask_becomes_a_note() -> None:
    ask2 = plan(("1", "a?", []), ("2", "b?", ["1"]))
    down = openai.APIConnectionError(request=httpx.Request("POST", "http://fake.invalid/v1/chat/completions"))
    pool = make_fake_pool({ROUTER: [ask2, "x"], SMALL: [down, "b"], BIG: []})
    result = run_graph(pool, question="Who is it?")

    failed, ok = executes(result)
    assert failed.error and "cannot connect" in failed.error and failed.cost == 0
    assert ok.error is None and ok.sub_query and "(no answer: Small-LM failed" in ok.sub_query
    assert result["answer"] == "x"


def test_given_subtasks_skip_the_decompose_call() -> None:
    given = [{"id": str(i), "text": f"q{i}?", "depends_on": []} for i in range(1, 5)]
    pool = make_fake_pool({ROUTER: ["done"], SMALL: ["a"] * 4})
    result = run_graph(pool, question="Four things?", subtasks=given)

    decomposed = result["hops"][0]
    assert decomposed.model is None and decomposed.detail["given"] is True
    assert len(executes(result)) == 4 and len(fake(pool, ROUTER).calls) == 1


def test_self_hosted_router_gets_json_schema_and_answer_grammar() -> None:
    base = make_fake_pool({ROUTER: [THREE, json.dumps({"1": "easy", "2": "easy", "3": "hard"}), "14"]})
    small = by_content({"Add": "14", "2+3": "5", "4+5": "9"})
    fake(base, SMALL).replies = [small] * 2
    fake(base, BIG).replies = ["14"]
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
    small = by_content({"Add the two results": "14", "2+3": "5", "4+5": "9"})
    pool = make_fake_pool(
        {
            ROUTER: [THREE, json.dumps({"1": "easy", "2": "easy", "3": "hard"}), "14"],
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
        assert stored == ["decompose", "allocate", "execute", "execute", "execute", "aggregate"]
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
