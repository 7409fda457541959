"""Router-R1 nodes: think → route → integrate → think … → answer (or a forced final answer, or the answer a
route call's reply gave the question itself, relayed)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from langgraph.runtime import Runtime

from graphs import answers
from graphs.hops import Hop, total_cost
from graphs.ports import CallResult, EndpointError, Grammar
from graphs.router_r1 import prompts, rules
from graphs.router_r1.state import RouterR1Context, State


async def think(state: State, runtime: Runtime[RouterR1Context]) -> dict[str, Any]:
    """The router generates until it emits a route call or an answer, under the step rules' grammar."""
    ctx = runtime.context
    started = time.time()
    transcript = state.get("transcript", "")
    step = _step_rules(state, ctx)
    grammar = rules.step_grammar(ctx.pool.names, state["question"], step) if ctx.use_grammar else None
    call = await _router_generate(
        ctx, state, transcript, stop=[prompts.SEARCH_STOP], grammar=grammar, max_tokens=ctx.router_max_tokens
    )
    text = call.text
    # The stop string is not returned: put it back so the trajectory stays well-formed.
    if call.finish_reason == "stop" and "<search>" in text and prompts.SEARCH_STOP not in text:
        text = text.rstrip() + " " + prompts.SEARCH_STOP
    action = prompts.parse_action(text, ctx.pool.names)
    detail = {"answer_only": step.answer_only} if step.answer_only else {}
    error = action.reason if action.kind == "malformed" else None
    hop = Hop.from_call("think", call, started, router_text=text, error=error, detail=detail)
    return {"transcript": transcript + text, "action": action, "hops": [hop]}


def after_think(
    state: State, runtime: Runtime[RouterR1Context]
) -> Literal["route", "answer", "force_answer"]:
    """Route when the rules allow this call; an answer ends the run; anything else is a forced answer."""
    action = state["action"]
    if action.kind == "answer":
        return "answer"
    if action.kind == "route" and _stop_reason(state, runtime.context) is None:
        return "route"
    return "force_answer"


async def route(state: State, runtime: Runtime[RouterR1Context]) -> dict[str, Any]:
    """Send the sub-query to the chosen pool model, unless the budget forbids it or the model is down."""
    ctx = runtime.context
    action = state["action"]
    assert action.model and action.query, "route is only reached with a parsed route action"
    entry = ctx.pool.get(action.model)
    turns = state.get("turns", 0) + 1
    spent = total_cost(state.get("hops", []))
    estimate = entry.cost_bound(prompts.POOL_MODEL_SYSTEM + action.query, ctx.response_max_tokens)
    started = time.time()
    if spent + estimate > ctx.budget_usd:
        left = max(ctx.budget_usd - spent, 0.0)
        message = prompts.BUDGET_REFUSAL.format(
            model=entry.name, estimate=estimate, left=left, budget=ctx.budget_usd
        )
        hop = Hop(
            node="route",
            model=entry.name,
            sub_query=action.query,
            error=f"budget exceeded: {message}",
            detail={"told_router": message},
        )
        return {"information": prompts.information(message), "turns": turns, "hops": [hop]}
    try:
        call = await ctx.pool.ask(
            entry.name, action.query, system=prompts.POOL_MODEL_SYSTEM, max_tokens=ctx.response_max_tokens
        )
    except EndpointError as exc:
        failure = prompts.ENDPOINT_FAILURE.format(model=entry.name, reason=exc.reason)
        hop = Hop(
            node="route",
            model=entry.name,
            sub_query=action.query,
            error=str(exc),
            latency_s=time.time() - started,
            started_at=started,
            detail={"told_router": failure},
        )
        return {"information": prompts.information(failure), "turns": turns, "hops": [hop]}
    hop = Hop.from_call("route", call, started, sub_query=action.query, response=call.text)
    return {"information": prompts.information(call.text), "turns": turns, "hops": [hop]}


def integrate(state: State) -> dict[str, Any]:
    """Fold the pool model's reply into the router's context as an information block."""
    return {"transcript": state["transcript"] + state["information"], "information": ""}


def after_integrate(state: State, runtime: Runtime[RouterR1Context]) -> Literal["think", "relay"]:
    """Relay when a reply answered the question itself in its format (the rules allow no other answer);
    otherwise the router reads the information and goes on."""
    return "relay" if _step_rules(state, runtime.context).answer else "think"


def relay(state: State, runtime: Runtime[RouterR1Context]) -> dict[str, Any]:
    """End the run with the answer a route call's reply gave the question, written into the trajectory as
    the router's answer would be (no model call: the router could only copy it)."""
    given = _step_rules(state, runtime.context).answer
    assert given, "relay is only reached when a reply answered the question"
    return {
        "transcript": state["transcript"] + prompts.RELAYED_ANSWER.format(answer=given),
        "answer": given,
        "error": None,
    }


def answer(state: State) -> dict[str, Any]:
    """The router's answer, cut to the question's format (a hosted router may write more than asked)."""
    question = state["question"]
    text = state["action"].answer or ""
    fmt = answers.answer_format(question)
    return {
        "answer": answers.clean_answer(text, fmt, answers.choice_letters(question)) or text,
        "error": None,
    }


async def force_answer(state: State, runtime: Runtime[RouterR1Context]) -> dict[str, Any]:
    """One last router turn restricted to an answer: after malformed output, a repeated route call, or a
    route call the rules no longer allow (max turns, the question already answered)."""
    ctx = runtime.context
    action = state["action"]
    reason = _stop_reason(state, ctx) or "no route allowed"
    transcript = state["transcript"] + prompts.FORCED_ANSWER_PREFIX
    started = time.time()
    call = await _router_generate(
        ctx,
        state,
        transcript,
        stop=[prompts.ANSWER_STOP, "\n"],
        grammar=rules.final_answer_grammar(state["question"]) if ctx.use_grammar else None,
        max_tokens=48,
    )
    text = call.text.removesuffix(prompts.ANSWER_STOP).strip()
    hop = Hop.from_call(
        "answer",
        call,
        started,
        router_text=text,
        error=None if text else "empty answer",
        detail={"forced": reason},
    )
    return {
        "transcript": transcript + text + " " + prompts.ANSWER_STOP,
        "answer": text,
        "error": reason if action.kind == "malformed" else None,
        "hops": [hop],
    }


def routes_so_far(hops: Sequence[Hop]) -> list[rules.Route]:
    """The route calls a run made, as the rules see them (a refused or failed call has no reply)."""
    return [
        rules.Route(model=h.model or "", query=h.sub_query or "", reply=None if h.error else h.response)
        for h in hops
        if h.node == "route"
    ]


def _step_rules(state: State, ctx: RouterR1Context) -> rules.StepRules:
    routes = routes_so_far(state.get("hops", []))
    return rules.step_rules(state["question"], routes, max_turns=ctx.max_turns, min_routes=ctx.min_routes)


def _stop_reason(state: State, ctx: RouterR1Context) -> str | None:
    """Why the latest action cannot be a route call now; None when it can."""
    action = state["action"]
    if action.kind == "malformed":
        return action.reason
    if action.kind != "route" or not action.model or not action.query:
        return "no route call"
    routes = routes_so_far(state.get("hops", []))
    if rules.is_repeat(action.model, action.query, routes):
        return f"repeated route call to {action.model}"
    step = _step_rules(state, ctx)
    if not step.allow_route:
        return (
            f"max turns ({ctx.max_turns}) reached" if step.answer_only == "max turns" else "question answered"
        )
    return None


async def _router_generate(
    ctx: RouterR1Context,
    state: State,
    transcript: str,
    *,
    stop: list[str],
    grammar: str | None,
    max_tokens: int,
) -> CallResult:
    """One router step: the router continues its trajectory under the step grammar (when it enforces one)."""
    return await ctx.pool.generate(
        ctx.pool.router.name,
        prompts.router_messages(state["question"], ctx.pool.models),
        continuation=transcript,
        max_tokens=max_tokens,
        stop=stop,
        constraint=Grammar(grammar) if grammar is not None else None,
    )
