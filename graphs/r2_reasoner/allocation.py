"""R2-Reasoner's allocation: the price tiers of the pool (easy → cheapest … hard → most expensive) and the
``allocate`` node, which gives each subtask a model by the configured strategy; unusable choices go to the
default (cheapest) model.
"""

from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from graphs.hops import Hop
from graphs.ports import CallResult, Constraint, EndpointError, Grammar, JsonSchema, ModelCard, ModelPool
from graphs.r2_reasoner import prompts
from graphs.r2_reasoner.prompts import DecompositionError, Subtask
from graphs.r2_reasoner.state import R2Context, State


def by_price(pool: ModelPool) -> list[ModelCard]:
    """Candidates from cheapest to most expensive (the price tiers)."""
    return sorted(pool.models, key=lambda m: (m.price_in + m.price_out, m.name))


def model_for_level(pool: ModelPool, level: str) -> ModelCard:
    """easy → cheapest, hard → most expensive, medium → the middle of the price-sorted list (rounded down)."""
    ordered = by_price(pool)
    index = prompts.LEVELS.index(level) * (len(ordered) - 1) // (len(prompts.LEVELS) - 1)
    return ordered[index]


def next_pricier(pool: ModelPool, name: str) -> ModelCard | None:
    """The next model up the price tiers from ``name`` (strictly pricier), or None at the top."""
    entry = pool.get(name)
    price = entry.price_in + entry.price_out
    return next((m for m in by_price(pool) if m.price_in + m.price_out > price), None)


def default_model(pool: ModelPool) -> ModelCard:
    """Where unusable allocations and the direct-answer fallback go: the cheapest candidate."""
    return pool.cheapest()


def resolve_choice(pool: ModelPool, choice: str) -> ModelCard | None:
    """A level or a candidate's name → the model; None when it is neither."""
    key = choice.strip().lower()
    if key in prompts.LEVELS:
        return model_for_level(pool, key)
    return pool.find(key)


async def generate(
    ctx: R2Context,
    entry: ModelCard,
    messages: list[tuple[str, str]],
    *,
    max_tokens: int,
    schema: dict[str, Any] | None = None,
    grammar: str | None = None,
) -> CallResult:
    """One reply by ``entry``, constrained (when the context says so) to the schema or the grammar."""
    constraint: Constraint | None = None
    if ctx.use_schema and schema is not None:
        constraint = JsonSchema(schema)
    elif ctx.use_schema and grammar is not None:
        constraint = Grammar(grammar)
    return await ctx.pool.generate(entry.name, messages, max_tokens=max_tokens, constraint=constraint)


async def allocate(state: State, runtime: Runtime[R2Context]) -> dict[str, Any]:
    """Give each subtask a model by the configured strategy; unusable choices go to the default model."""
    ctx = runtime.context
    pool, plan = ctx.pool, state["plan"]
    default = default_model(pool)
    strategy = "fallback" if state.get("fallback") else ctx.allocation
    started = time.time()
    problems: dict[str, str] = {}
    if strategy == "router":
        return await _allocate_by_router(ctx, plan, started)
    if strategy in ("fallback", "cheapest"):
        chosen = default if strategy == "fallback" else pool.cheapest()
    elif strategy == "strongest":
        chosen = pool.most_expensive()
    elif strategy.startswith("fixed:"):
        named = pool.find(strategy.removeprefix("fixed:"))
        chosen = named or default
        if named is None:
            problems = {s.id: f"unknown model {strategy.removeprefix('fixed:')!r}" for s in plan}
    else:
        chosen = default
        problems = {s.id: f"unknown allocation strategy {strategy!r}" for s in plan}
    allocation = {s.id: chosen.name for s in plan}
    hop = Hop(
        node="allocate",
        started_at=started,
        error=_problem_text(problems, default) if problems else None,
        detail=_allocation_detail(strategy, allocation, problems=problems),
    )
    return {"allocation": allocation, "hops": [hop]}


async def _allocate_by_router(ctx: R2Context, plan: list[Subtask], started: float) -> dict[str, Any]:
    pool, router, default = ctx.pool, ctx.pool.router, default_model(ctx.pool)
    ids = [s.id for s in plan]
    try:
        call = await generate(
            ctx,
            router,
            prompts.allocate_messages(plan, by_price(pool)),
            max_tokens=ctx.router_max_tokens,
            schema=prompts.allocation_schema(ids, pool.names),
        )
    except EndpointError as exc:
        fallback = {sid: default.name for sid in ids}
        hop = Hop(
            node="allocate",
            model=router.name,
            error=f"{exc}; every subtask goes to {default.name}",
            latency_s=time.time() - started,
            started_at=started,
            detail=_allocation_detail("router", fallback),
        )
        return {"allocation": fallback, "hops": [hop]}
    problems: dict[str, str] = {}
    try:
        choices = prompts.parse_allocation(call.text)
    except DecompositionError as exc:
        choices = {}
        problems = {sid: str(exc) for sid in ids}
    allocation: dict[str, str] = {}
    for sid in ids:
        choice = choices.get(sid)
        entry = resolve_choice(pool, choice) if choice is not None else None
        if entry is None:
            problems.setdefault(sid, "no choice" if choice is None else f"unknown choice {choice!r}")
            entry = default
        allocation[sid] = entry.name
    hop = Hop.from_call(
        "allocate",
        call,
        started,
        router_text=call.text,
        error=_problem_text(problems, default) if problems else None,
        detail=_allocation_detail("router", allocation, choices=choices, problems=problems),
    )
    return {"allocation": allocation, "hops": [hop]}


def _allocation_detail(
    strategy: str,
    allocation: dict[str, str],
    *,
    choices: dict[str, str] | None = None,
    problems: dict[str, str] | None = None,
) -> dict[str, object]:
    detail: dict[str, object] = {"strategy": strategy, "allocation": allocation}
    if choices is not None:
        detail["choices"] = choices
    if problems:
        detail["defaulted"] = problems
    return detail


def _problem_text(problems: dict[str, str], default: ModelCard) -> str:
    listed = "; ".join(f"subtask {sid}: {why}" for sid, why in problems.items())
    return f"{listed} → default {default.name}"
