"""R2-Reasoner nodes: decompose → allocate (:mod:`graphs.r2_reasoner.allocation`) → (wave → execute ×ready
subtasks)* → aggregate. The plan is the router's steps, then the question itself
(:func:`graphs.r2_reasoner.prompts.with_question`).

``dispatch`` (after each ``wave``) sends every subtask whose dependencies are answered to ``execute`` with
LangGraph ``Send``, so independent subtasks run in parallel; results merge through a dict reducer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Send

from graphs import answers
from graphs.hops import Hop, total_cost
from graphs.ports import EndpointError
from graphs.r2_reasoner import prompts
from graphs.r2_reasoner.allocation import generate, next_pricier
from graphs.r2_reasoner.prompts import DecompositionError, Subtask
from graphs.r2_reasoner.state import R2Context, State, SubtaskResult, SubtaskTask


def _plan_detail(plan: Sequence[Subtask]) -> list[dict[str, object]]:
    return [{"id": s.id, "text": s.text, "depends_on": list(s.depends_on)} for s in plan]


# -- nodes ----------------------------------------------------------------------------------------------
async def decompose(state: State, runtime: Runtime[R2Context]) -> dict[str, Any]:
    """The router lists the steps before the question; a malformed list falls back to a direct answer."""
    ctx = runtime.context
    question = state["question"]
    given = state.get("subtasks")
    started = time.time()
    if given is not None:  # a fixed decomposition from the input: validated, no model call
        try:
            plan = prompts.with_question(prompts.validate_subtasks(given, ctx.max_subtasks), question)
        except DecompositionError as exc:
            return _fallback(question, Hop(node="decompose", error=f"given subtasks: {exc}"), str(exc))
        hop = Hop(
            node="decompose", started_at=started, detail={"subtasks": _plan_detail(plan), "given": True}
        )
        return {"plan": plan, "fallback": False, "hops": [hop]}
    router = ctx.pool.router
    try:
        call = await generate(
            ctx,
            router,
            prompts.decompose_messages(question, ctx.max_subtasks),
            max_tokens=ctx.router_max_tokens,
            schema=prompts.decomposition_schema(ctx.max_subtasks),
        )
    except EndpointError as exc:
        hop = Hop(
            node="decompose",
            model=router.name,
            error=str(exc),
            latency_s=time.time() - started,
            started_at=started,
        )
        return _fallback(question, hop, str(exc))
    try:
        plan = prompts.with_question(prompts.parse_decomposition(call.text, ctx.max_subtasks), question)
    except DecompositionError as exc:
        hop = Hop.from_call("decompose", call, started, router_text=call.text, error=f"malformed: {exc}")
        return _fallback(question, hop, f"malformed: {exc}")
    hop = Hop.from_call(
        "decompose", call, started, router_text=call.text, detail={"subtasks": _plan_detail(plan)}
    )
    return {"plan": plan, "fallback": False, "hops": [hop]}


def _fallback(question: str, hop: Hop, reason: str) -> dict[str, Any]:
    plan = prompts.with_question([], question)
    hop = hop.model_copy(update={"detail": {**hop.detail, "fallback": _plan_detail(plan)}})
    return {
        "plan": plan,
        "fallback": True,
        "error": f"decomposition failed ({reason}); answered directly",
        "hops": [hop],
    }


def wave(state: State) -> dict[str, Any]:
    """Join point of the parallel branches; ``dispatch`` then schedules the next wave."""
    return {"waves": state.get("waves", 0) + 1}


def dispatch(state: State, runtime: Runtime[R2Context]) -> list[Send] | Literal["aggregate"]:
    """Send every runnable subtask (pending re-runs, then those whose dependencies are answered)."""
    ctx = runtime.context
    plan, results = state["plan"], state.get("results", {})
    by_id = {s.id: s for s in plan}
    tasks: list[tuple[Subtask, str, str | None]] = []
    for sid, result in results.items():
        if result.escalate_to is not None:
            tasks.append((by_id[sid], result.escalate_to, result.model))
    for subtask in plan:
        if subtask.id in results:
            continue
        if all(d in results and results[d].final for d in subtask.depends_on):
            tasks.append((subtask, state["allocation"][subtask.id], None))
    if not ctx.parallel:
        tasks = tasks[:1]
    reserved = total_cost(state.get("hops", []))
    sends: list[Send] = []
    for subtask, model, escalated_from in tasks:
        prompt = prompts.subtask_prompt(subtask, [(by_id[d], results[d].answer) for d in subtask.depends_on])
        task: SubtaskTask = {
            "subtask": subtask,
            "model": model,
            "prompt": prompt,
            "reserved_usd": reserved,
            "escalated_from": escalated_from,
        }
        reserved += ctx.pool.get(model).cost_bound(prompts.EXECUTE_SYSTEM + prompt, ctx.response_max_tokens)
        sends.append(Send("execute", task))
    return sends or "aggregate"


async def execute(task: SubtaskTask, runtime: Runtime[R2Context]) -> dict[str, Any]:
    """Run one subtask on its model: refused over budget, an error note when the endpoint fails."""
    ctx = runtime.context
    subtask, prompt, escalated_from = task["subtask"], task["prompt"], task["escalated_from"]
    entry = ctx.pool.get(task["model"])
    detail: dict[str, object] = {"escalated_from": escalated_from} if escalated_from else {}
    estimate = entry.cost_bound(prompts.EXECUTE_SYSTEM + prompt, ctx.response_max_tokens)
    started = time.time()
    failed: str | None
    if task["reserved_usd"] + estimate > ctx.budget_usd:
        left = max(ctx.budget_usd - task["reserved_usd"], 0.0)
        reason = prompts.BUDGET_REFUSAL.format(
            model=entry.name, estimate=estimate, left=left, budget=ctx.budget_usd
        )
        hop = Hop(
            node="execute",
            model=entry.name,
            subtask_id=subtask.id,
            sub_query=prompt,
            error=f"budget exceeded: {reason}",
            started_at=started,
            detail=detail,
        )
        answer = prompts.NO_ANSWER.format(reason="budget exceeded")
        result = SubtaskResult(
            model=entry.name, answer=answer, failed="budget exceeded", escalated_from=escalated_from
        )
        return {"results": {subtask.id: result}, "hops": [hop]}
    try:
        call = await ctx.pool.ask(
            entry.name, prompt, system=prompts.EXECUTE_SYSTEM, max_tokens=ctx.response_max_tokens
        )
    except EndpointError as exc:
        hop = Hop(
            node="execute",
            model=entry.name,
            subtask_id=subtask.id,
            sub_query=prompt,
            error=str(exc),
            latency_s=time.time() - started,
            started_at=started,
            detail={**detail, "failed_check": "endpoint error"},
        )
        answer, failed = (
            prompts.NO_ANSWER.format(reason=f"{entry.name} failed: {exc.reason}"),
            "endpoint error",
        )
    else:
        answer = call.text.strip()
        failed = prompts.failed_check(answer)
        if failed:
            detail["failed_check"] = failed
        hop = Hop.from_call(
            "execute",
            call,
            started,
            subtask_id=subtask.id,
            sub_query=prompt,
            response=call.text,
            detail=detail,
        )
    escalate_to = None
    if ctx.escalate and failed and escalated_from is None:
        upper = next_pricier(ctx.pool, entry.name)
        escalate_to = upper.name if upper else None
    result = SubtaskResult(
        model=entry.name, answer=answer, failed=failed, escalated_from=escalated_from, escalate_to=escalate_to
    )
    return {"results": {subtask.id: result}, "hops": [hop]}


async def aggregate(state: State, runtime: Runtime[R2Context]) -> dict[str, Any]:
    """The final answer in the question's format: the letter or number the last subtask (the question
    itself) stated, else the aggregator's composition of every subtask's answer."""
    ctx = runtime.context
    pool, question, plan = ctx.pool, state["question"], state["plan"]
    results = state.get("results", {})
    steps = [(s, results[s.id].answer if s.id in results else "(not run)") for s in plan]
    fmt = answers.answer_format(question)
    letters = answers.choice_letters(question)
    error = state.get("error")
    notes: list[str] = []
    entry = pool.router
    if ctx.aggregator:
        found = pool.find(ctx.aggregator)
        if found is None and ctx.aggregator.lower() == pool.router.name.lower():
            found = pool.router
        if found is None:
            notes.append(f"unknown aggregator {ctx.aggregator!r}; the router aggregates")
        entry = found or pool.router
    if fmt != "span" and plan[-1].id in results:
        # The last subtask is the question itself: a letter or number it states is the answer as it stands
        # (an aggregator could only copy it; a span it still writes, cut down from the reply).
        stated = answers.stated_answer(question, results[plan[-1].id].answer)
        if stated:
            return {"answer": stated, "error": error}
    started = time.time()
    detail: dict[str, object] = {"format": fmt}
    try:
        call = await generate(
            ctx,
            entry,
            prompts.aggregate_messages(question, steps, fmt),
            max_tokens=ctx.answer_max_tokens,
            grammar=answers.answer_grammar(fmt, letters),
        )
    except EndpointError as exc:
        notes.append(str(exc))
        hop = Hop(
            node="aggregate",
            model=entry.name,
            error="; ".join(notes),
            latency_s=time.time() - started,
            started_at=started,
            detail=detail,
        )
        answer = _last_answer(steps, fmt, letters)
        return {"answer": answer, "error": error or f"aggregation failed: {exc}", "hops": [hop]}
    answer = answers.clean_answer(call.text, fmt, letters)
    if not answer:
        notes.append("empty aggregate answer; the last subtask's answer is used")
        answer = _last_answer(steps, fmt, letters)
    hop = Hop.from_call(
        "aggregate",
        call,
        started,
        router_text=call.text,
        response=answer,
        error="; ".join(notes) or None,
        detail=detail,
    )
    return {"answer": answer, "error": error, "hops": [hop]}


def _last_answer(steps: Sequence[tuple[Subtask, str]], fmt: answers.AnswerFormat, letters: list[str]) -> str:
    return answers.clean_answer(steps[-1][1], fmt, letters) if steps else ""
