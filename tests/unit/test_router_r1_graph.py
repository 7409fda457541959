"""Control flow of the Router-R1 graph over a scripted pool: routes, limits, refusals and failures."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable

from app.pool import EndpointError, Pool
from graphs.hops import Hop, total_cost
from graphs.router_r1 import prompts
from graphs.router_r1.graph import graph
from graphs.router_r1.rewards import is_well_formed
from graphs.router_r1.state import RouterR1Context
from tests.fakes import BIG, ROUTER, SMALL, count_words, fake, make_fake_pool

QUESTION = "What is the capital of France?"


def think_route(model: str, query: str, thought: str = "I should ask another model.") -> str:
    # What a hosted router would write; the fake cuts it at the '</search>' stop string as a server would.
    return f"<think>{thought}</think>\n<search> {model}: {query} </search>"


def think_answer(answer: str, thought: str = "I know enough now.") -> str:
    return f"<think>{thought}</think>\n<answer> {answer} </answer>"


def run_graph(pool: Pool, question: str = QUESTION, **context: Any) -> dict[str, Any]:
    return asyncio.run(graph.ainvoke({"question": question}, context=RouterR1Context(pool=pool, **context)))


def nodes(result: dict[str, Any]) -> list[str]:
    return [hop.node for hop in result["hops"]]


def router_context(pool: Pool, call: int = -1) -> str:
    """The trajectory the router was asked to continue on one of its calls ('' on the first)."""
    messages = fake(pool, ROUTER).calls[call].messages
    return str(messages[-1].content) if isinstance(messages[-1], AIMessage) else ""


def assert_costs(pool: Pool, result: dict[str, Any]) -> None:
    """Every hop costs its model's pool price times its tokens; refused or failed calls cost nothing."""
    hops: list[Hop] = result["hops"]
    for hop in hops:
        assert hop.model is not None
        if hop.error and hop.node == "route":
            assert (hop.cost, hop.input_tokens, hop.output_tokens) == (0.0, 0, 0), hop
            continue
        assert hop.input_tokens >= 1 and hop.output_tokens >= 1, hop
        entry = pool.get(hop.model)
        expected = (hop.input_tokens * entry.price_in + hop.output_tokens * entry.price_out) / 1_000_000
        assert hop.cost == pytest.approx(expected, rel=1e-12, abs=0), hop
    assert total_cost(hops) == pytest.approx(sum(h.cost for h in hops))


def test_compiled_graph_is_a_runnable() -> None:
    assert isinstance(graph, Runnable)
    assert graph.name == "router-r1"
    assert {"think", "route", "integrate", "answer", "force_answer"} <= set(graph.get_graph().nodes)


def test_route_route_answer() -> None:
    q1, q2 = "Which city is the seat of the French government?", "Is Paris the capital of France?"
    pool = make_fake_pool(
        {
            ROUTER: [think_route(SMALL, q1), think_route(BIG, q2, "Let me check."), think_answer("Paris")],
            SMALL: ["Paris."],
            BIG: ["Yes, Paris is the capital of France."],
        }
    )
    result = run_graph(pool)

    assert result["answer"] == "Paris"
    assert result.get("error") is None
    assert nodes(result) == ["think", "route", "think", "route", "think"]
    think1, route1, _, route2, think3 = result["hops"]
    assert (route1.model, route1.sub_query, route1.response) == (SMALL, q1, "Paris.")
    assert (route2.model, route2.sub_query, route2.response) == (
        BIG,
        q2,
        "Yes, Paris is the capital of France.",
    )
    assert route1.error is None and route2.error is None
    assert think1.model == think3.model == ROUTER
    # The stop string is cut by the server and put back by the graph.
    assert think1.router_text == think_route(SMALL, q1)
    assert think3.router_text == think_answer("Paris")
    assert all(h.error is None for h in result["hops"])
    assert_costs(pool, result)
    # Pool models are asked the sub-query under the pool-model system prompt; tokens are what they saw.
    small_call = fake(pool, SMALL).calls[0]
    assert small_call.texts == [prompts.POOL_MODEL_SYSTEM, q1]
    assert route1.input_tokens == count_words(prompts.POOL_MODEL_SYSTEM) + count_words(q1)
    assert route1.output_tokens == 1

    router = fake(pool, ROUTER)
    assert len(router.calls) == 3
    assert all(c.stop == [prompts.SEARCH_STOP] for c in router.calls)
    assert all(c.kwargs.get("extra_body") is None for c in router.calls)  # no grammar for hosted routers
    first = router.calls[0]
    assert [type(m).__name__ for m in first.messages] == ["SystemMessage", "HumanMessage"]
    assert first.texts[1] == prompts.router_user_prompt(QUESTION, pool.models)
    last = router_context(pool)
    assert last.count("<information>") == 2 and last.count("</information>") == 2
    assert "<information>Paris.</information>" in last
    assert "<information>Yes, Paris is the capital of France.</information>" in last
    assert last.startswith(think_route(SMALL, q1))
    assert router_context(pool, 1) in last  # the trajectory only grows


def test_max_turns_forces_an_answer() -> None:
    pool = make_fake_pool(
        {
            ROUTER: [
                think_route(SMALL, "q one?"),
                think_route(SMALL, "q two?"),
                think_route(BIG, "q three?"),
                "Paris",
            ],
            SMALL: ["a1", "a2"],
            BIG: ["never asked"],
        }
    )
    result = run_graph(pool, max_turns=2)

    assert nodes(result) == ["think", "route", "think", "route", "think", "answer"]
    assert result["answer"] == "Paris"
    assert result.get("error") is None  # running out of turns is not malformed output
    assert [h.sub_query for h in result["hops"] if h.node == "route"] == ["q one?", "q two?"]
    assert fake(pool, BIG).calls == []  # the third route was not executed
    assert len(fake(pool, SMALL).calls) == 2
    forced = fake(pool, ROUTER).calls[-1]
    assert forced.stop == [prompts.ANSWER_STOP, "\n"]
    assert router_context(pool).endswith(prompts.FORCED_ANSWER_PREFIX)
    assert router_context(pool).count("<information>") == 2
    answer_hop = result["hops"][-1]
    assert (answer_hop.model, answer_hop.router_text, answer_hop.error) == (ROUTER, "Paris", None)
    assert_costs(pool, result)


def test_a_repeated_route_call_is_not_made_and_ends_in_the_answer() -> None:
    seat = "Which city is the seat of the French government?"
    again = "which city is the seat of the  French government?"  # the same call up to case and spacing
    pool = make_fake_pool(
        {ROUTER: [think_route(SMALL, seat), think_route(SMALL, again), "Paris"], SMALL: ["Paris"]}
    )
    result = run_graph(pool, max_turns=4)
    assert nodes(result) == ["think", "route", "think", "answer"]
    assert len(fake(pool, SMALL).calls) == 1  # the repeat was not sent
    assert result["hops"][-1].detail["forced"] == f"repeated route call to {SMALL}"
    assert result["answer"] == "Paris" and result.get("error") is None


def test_an_answered_question_leaves_only_the_answer() -> None:
    pool = make_fake_pool(
        {
            ROUTER: [think_route(SMALL, QUESTION), think_route(BIG, "Is that right?"), "Paris"],
            SMALL: ["Paris"],
            BIG: ["never asked"],
        }
    )
    result = run_graph(pool, max_turns=4)
    assert nodes(result) == ["think", "route", "think", "answer"]
    assert fake(pool, BIG).calls == []
    assert result["hops"][2].detail == {"answer_only": "answered"}  # the step was told so (its grammar)
    assert result["hops"][-1].detail["forced"] == "question answered"
    assert result["answer"] == "Paris"


def test_a_letter_given_to_the_question_itself_is_relayed_without_another_router_step() -> None:
    question = (
        "Where does a wild bird usually live?\nA. cage\nB. sky\nC. countryside\nAnswer with the letter."
    )
    pool = make_fake_pool(
        {ROUTER: [think_route(BIG, question)], BIG: ["Wild birds live outdoors, in the country.\nAnswer: C"]}
    )
    result = run_graph(pool, question=question)
    assert nodes(result) == ["think", "route"]  # the router is not asked to copy the letter
    assert len(fake(pool, ROUTER).calls) == 1
    assert result["answer"] == "C" and result.get("error") is None
    assert result["transcript"].endswith("</information>\n<answer> C </answer>")
    assert is_well_formed(result["transcript"], pool.names)


@pytest.mark.parametrize(
    ("question", "written", "kept"),
    [
        ("Which is a bird?\nA. cat\nB. owl\nAnswer with the letter.", "The answer is B, the owl", "B"),
        ("How many legs do 3 spiders have in total?", "3 x 8 = 24 legs", "24"),
        (QUESTION, "Paris.", "Paris"),
    ],
)
def test_the_answer_is_cut_to_the_questions_format(question: str, written: str, kept: str) -> None:
    pool = make_fake_pool({ROUTER: [think_route(SMALL, "x?"), think_answer(written)], SMALL: ["y"]})
    assert run_graph(pool, question=question)["answer"] == kept


def test_forced_answer_cut_at_stop_strings() -> None:
    script = [think_route(SMALL, "q?"), think_route(SMALL, "again?"), "Paris </answer>\n<think>more"]
    pool = make_fake_pool({ROUTER: script, SMALL: ["a"]})
    result = run_graph(pool, max_turns=1)
    assert nodes(result) == ["think", "route", "think", "answer"]
    assert result["answer"] == "Paris"
    assert result["hops"][-1].output_tokens == 1  # only 'Paris' was generated before the stop string


def test_empty_forced_answer_is_recorded() -> None:
    pool = make_fake_pool({ROUTER: ["<think>x</think> no action", "\nParis"]})
    result = run_graph(pool)
    assert result["answer"] == ""
    assert result["hops"][-1].error == "empty answer"
    assert result["error"].startswith("no action")


def test_budget_refusal_tells_the_router() -> None:
    pool = make_fake_pool(
        {ROUTER: [think_route(BIG, "capital of France?"), think_answer("Paris")], BIG: ["Paris"]}
    )
    result = run_graph(pool, budget_usd=1e-9)

    assert nodes(result) == ["think", "route", "think"]
    assert result["answer"] == "Paris"
    assert result.get("error") is None
    route = result["hops"][1]
    assert route.model == BIG and route.sub_query == "capital of France?"
    assert route.error is not None and route.error.startswith("budget exceeded")
    assert route.response is None
    assert (route.cost, route.input_tokens, route.output_tokens) == (0.0, 0, 0)
    assert fake(pool, BIG).calls == []
    context = router_context(pool)
    assert f"<information>Not called: {BIG} would cost up to $" in context
    assert "of the $0.000000 budget is left" in context
    assert_costs(pool, result)


def test_budget_counts_what_was_already_spent() -> None:
    # Small-LM's worst case (~$0.0001) fits a $0.0005 budget; Big-LM's (~$0.001) no longer does.
    pool = make_fake_pool(
        {
            ROUTER: [think_route(SMALL, "first?"), think_route(BIG, "second?"), think_answer("Paris")],
            SMALL: ["Paris"],
        }
    )
    result = run_graph(pool, budget_usd=0.0005, response_max_tokens=512)
    route1, route2 = (h for h in result["hops"] if h.node == "route")
    assert route1.error is None and route1.response == "Paris"
    assert route2.error is not None and route2.error.startswith("budget exceeded")
    assert fake(pool, BIG).calls == []
    assert total_cost(result["hops"]) <= 0.0005
    assert_costs(pool, result)


@pytest.mark.parametrize(
    ("router_text", "reason"),
    [
        (think_route("GPT-5", "capital of France?"), "unknown model 'GPT-5'"),
        (f"<think>x</think>\n<search> {SMALL}: </search>", f"empty query for {SMALL}"),
        (
            f"<think>x</think>\n<search> {SMALL} capital of France? </search>",
            "route call lacks 'Model-Name: query'",
        ),
        ("<think>x</think>\n<answer> Paris", "unclosed <answer> tag"),
        ("<think>x</think>\n<answer>  </answer>", "empty <answer>"),
        ("<think>I will just talk.</think> It is Paris.", "no action: expected <search> or <answer>"),
    ],
    ids=["unknown-model", "empty-query", "missing-colon", "unclosed-answer", "empty-answer", "no-tag"],
)
def test_malformed_router_output_forces_an_answer(router_text: str, reason: str) -> None:
    pool = make_fake_pool({ROUTER: [router_text, "Paris"]})
    result = run_graph(pool)

    assert nodes(result) == ["think", "answer"]
    think, answer = result["hops"]
    assert think.error == reason
    assert answer.error is None and answer.router_text == "Paris"
    assert result["answer"] == "Paris"
    assert result["error"] == reason
    assert fake(pool, SMALL).calls == [] and fake(pool, BIG).calls == []
    assert router_context(pool).endswith(prompts.FORCED_ANSWER_PREFIX)
    assert_costs(pool, result)


def test_router_cut_off_inside_search_is_an_unclosed_tag() -> None:
    # A router that runs into its token cap (finish_reason 'length') leaves <search> open.
    long_route = think_route(SMALL, "what is the capital city of the French Republic today?")
    pool = make_fake_pool({ROUTER: [long_route, "Paris"]}, max_tokens={ROUTER: 8})
    result = run_graph(pool)
    assert nodes(result) == ["think", "answer"]
    assert result["hops"][0].error == "unclosed <search> tag"
    assert result["error"] == "unclosed <search> tag"
    assert result["answer"] == "Paris"
    assert fake(pool, SMALL).calls == []


def test_malformed_after_a_route_keeps_the_information() -> None:
    pool = make_fake_pool(
        {ROUTER: [think_route(SMALL, "capital?"), think_route("GPT-5", "x"), "Paris"], SMALL: ["Paris"]}
    )
    result = run_graph(pool)
    assert nodes(result) == ["think", "route", "think", "answer"]
    assert result["error"] == "unknown model 'GPT-5'"
    assert "<information>Paris</information>" in router_context(pool)


REQUEST = httpx.Request("POST", "http://fake.invalid/v1/chat/completions")


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            openai.APIConnectionError(request=REQUEST),
            "cannot connect (APIConnectionError: Connection error.)",
        ),
        (httpx.ConnectError("[Errno 111] Connection refused"), "cannot connect (ConnectError: [Errno 111]"),
        (openai.APITimeoutError(request=REQUEST), "timed out (APITimeoutError)"),
        (httpx.ReadTimeout("read timed out"), "timed out (ReadTimeout)"),
        (RuntimeError("boom"), "RuntimeError: boom"),
    ],
    ids=["openai-connection", "httpx-connect", "openai-timeout", "httpx-timeout", "other"],
)
def test_pool_model_failure_is_reported_to_the_router(failure: Exception, reason: str) -> None:
    pool = make_fake_pool(
        {ROUTER: [think_route(SMALL, "capital of France?"), think_answer("Paris")], SMALL: [failure]}
    )
    result = run_graph(pool)

    assert nodes(result) == ["think", "route", "think"]
    assert result["answer"] == "Paris"
    assert result.get("error") is None
    route = result["hops"][1]
    assert route.error is not None
    assert route.error.startswith(f"model {SMALL!r} endpoint failed: {reason}")
    assert route.response is None and route.cost == 0.0
    context = router_context(pool)
    assert f"<information>Error: {SMALL} did not answer ({reason}" in context
    assert "Try another model or answer.</information>" in context
    assert_costs(pool, result)


def test_router_can_retry_another_model_after_a_failure() -> None:
    pool = make_fake_pool(
        {
            ROUTER: [think_route(SMALL, "capital?"), think_route(BIG, "capital?"), think_answer("Paris")],
            SMALL: [httpx.ConnectError("refused")],
            BIG: ["Paris"],
        }
    )
    result = run_graph(pool)
    route1, route2 = (h for h in result["hops"] if h.node == "route")
    assert route1.error is not None and "cannot connect" in route1.error
    assert route2.error is None and route2.response == "Paris"
    assert router_context(pool).count("<information>") == 2


@pytest.mark.parametrize("failing_call", [0, 1])
def test_router_failure_raises_endpoint_error(failing_call: int) -> None:
    replies: list[Any] = [think_route(SMALL, "capital?"), think_answer("Paris")]
    replies[failing_call] = openai.APIConnectionError(request=REQUEST)
    pool = make_fake_pool({ROUTER: replies, SMALL: ["Paris"]})
    with pytest.raises(EndpointError) as caught:
        run_graph(pool)
    assert caught.value.model == ROUTER
    assert caught.value.reason.startswith("cannot connect")


def test_router_failure_during_forced_answer_raises() -> None:
    pool = make_fake_pool({ROUTER: ["no action", httpx.ReadTimeout("slow")]})
    with pytest.raises(EndpointError, match="timed out"):
        run_graph(pool)


def test_slow_pool_model_latency_is_recorded() -> None:
    pool = make_fake_pool(
        {ROUTER: [think_route(SMALL, "capital?"), think_answer("Paris")], SMALL: ["Paris"]},
        delay_s={SMALL: 0.05},
    )
    result = run_graph(pool)
    route = result["hops"][1]
    assert route.latency_s >= 0.05
    assert result["hops"][0].latency_s < 0.05


def test_each_run_starts_a_fresh_trajectory() -> None:
    pool = make_fake_pool({ROUTER: [think_answer("Paris"), think_answer("Rome")]})
    assert run_graph(pool)["answer"] == "Paris"
    assert run_graph(pool, question="Capital of Italy?")["answer"] == "Rome"
    second = fake(pool, ROUTER).calls[1]
    assert len(second.messages) == 2  # no trajectory carried over from the first run
    assert second.texts[1].rstrip().endswith("Question: Capital of Italy?")
