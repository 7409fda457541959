"""Baselines that are not graphs: direct pool calls, stored as runs through ``service.record_direct``.

* ``single:<model>`` — that pool model answers the question directly (one call);
* ``cheapest`` / ``largest`` / ``random`` — the cheapest, the most expensive, or a seeded random pool model
  answers directly (one call; when ``single:<model>`` already answered the item in the same results
  directory its record is reused: the same request at temperature 0, so no second call is made);
* ``prompt-router`` — zero-shot: the router model reads the descriptors and names one model (one call,
  under a grammar of the pool's names where its server enforces one), which then answers (one call);
* ``oracle`` — per item, the cheapest single model that answered correctly (the cheapest model when none
  did), computed from the ``single:*`` records: the upper bound of any router over this pool. No calls.
"""

from __future__ import annotations

import random
import time
from typing import Any

from app.evaluation.data import EvalItem
from app.pool import EndpointError, Pool
from app.service import RouteGraphService, RunResult
from graphs import answers
from graphs.hops import Hop
from graphs.ports import Grammar
from graphs.router_r1 import prompts, rules

GRAPH_METHODS = ("router-r1", "r2-reasoner")
PICKING = ("cheapest", "largest", "random")
ROUTER_PROMPT = """You route questions to language models. The candidates are:
{candidates}

Question: {question}

Reply with only the exact name of the one candidate most likely to answer correctly at a low cost."""


class MethodError(ValueError):
    """An unknown method name, or a single model not in the pool."""


def expand_methods(spec: str, pool: Pool) -> list[str]:
    """``all``, or a comma list of methods (``single`` = every ``single:<model>``), in running order."""
    singles = [f"single:{name}" for name in pool.names]
    if spec.strip() == "all":
        return [*singles, *PICKING, "prompt-router", *GRAPH_METHODS, "oracle"]
    methods: list[str] = []
    for raw in (part.strip() for part in spec.split(",")):
        if not raw:
            continue
        if raw == "single":
            methods.extend(singles)
        elif raw.startswith("single:"):
            methods.append(f"single:{pool.get(raw.removeprefix('single:')).name}")
        elif raw in (*PICKING, "prompt-router", *GRAPH_METHODS, "oracle"):
            methods.append(raw)
        else:
            raise MethodError(
                f"unknown method {raw!r}; choose all, single, single:<model>, cheapest, largest, random, "
                "prompt-router, router-r1, r2-reasoner or oracle (comma-separated)"
            )
    order = {m: i for i, m in enumerate([*singles, *PICKING, "prompt-router", *GRAPH_METHODS, "oracle"])}
    return sorted(dict.fromkeys(methods), key=lambda m: order.get(m, len(order)))


def picked_model(method: str, pool: Pool, item: EvalItem, seed: int, dataset: str) -> str:
    """The model a picking baseline sends ``item`` to (``random`` is seeded per item, order-free)."""
    if method == "cheapest":
        return pool.cheapest().name
    if method == "largest":
        return pool.most_expensive().name
    if method == "random":
        return random.Random(f"{seed}:{dataset}:{item.id}").choice(pool.names)
    return method.removeprefix("single:")


async def _call_hop(
    service: RouteGraphService,
    node: str,
    model: str,
    query: str,
    max_tokens: int,
    system: str | None = None,
) -> tuple[Hop, str | None]:
    started = time.time()
    try:
        call = await service.pool.ask(model, query, system=system, max_tokens=max_tokens)
    except EndpointError as exc:
        return Hop(node=node, model=model, sub_query=query, error=str(exc), started_at=started), str(exc)
    return Hop.from_call(node, call, started, sub_query=query, response=call.text), None


def stated_answer(item: EvalItem, reply: str | None) -> str:
    """What a model's reply answers, in the item's format: its ``Answer:`` line (or the whole reply when
    short), cut to a choice letter, a number or a short span, as Router-R1's final answer is."""
    stated = answers.reply_answer(reply) or (reply or "").strip()
    fmt = answers.answer_format(item.prompt)
    return answers.clean_answer(stated, fmt, answers.choice_letters(item.prompt)) or stated


async def direct(service: RouteGraphService, item: EvalItem, model: str, label: str) -> RunResult:
    """``model`` answers ``item`` in one call, stored as a run labelled ``label``.

    It gets the instructions pool models get inside Router-R1 (the answer alone for a fact, a few steps and
    an ``Answer:`` line for a calculation or a choice), so that a graph and a single model are judged on
    the same kind of reply.
    """
    started = time.perf_counter()
    hop, error = await _call_hop(
        service,
        "answer",
        model,
        item.prompt,
        service.settings.response_max_tokens,
        system=prompts.POOL_MODEL_SYSTEM,
    )
    return service.record_direct(
        item.prompt,
        graph=label,
        hops=[hop],
        answer=stated_answer(item, hop.response),
        error=error,
        latency_s=time.perf_counter() - started,
    )


def router_prompt(pool: Pool, question: str) -> str:
    candidates = "\n".join(
        f"- {m.name} (${m.price_in:g} in / ${m.price_out:g} out per 1M tokens): {m.descriptor}"
        for m in pool.models
    )
    return ROUTER_PROMPT.format(candidates=candidates, question=question)


def parse_pick(text: str, pool: Pool) -> str | None:
    """The pool model named first in ``text`` (case-insensitive), or None."""
    lowered = text.lower()
    found = [(lowered.find(n.lower()), n) for n in pool.names if n.lower() in lowered]
    return min(found)[1] if found else None


async def prompt_router(service: RouteGraphService, item: EvalItem) -> RunResult:
    """The router names one model from the descriptors (falls back to the cheapest), which then answers.

    A self-hosted router picks under a grammar of the pool's names: left free, Qwen2.5-0.5B's reply named
    no candidate on any of 50 CommonsenseQA items, so the baseline measured only its fallback.
    """
    pool, started = service.pool, time.perf_counter()
    at = time.time()
    try:
        call = await pool.generate(
            pool.router.name,
            [("human", router_prompt(pool, item.prompt))],
            max_tokens=service.settings.router_max_tokens,
            constraint=Grammar(rules.model_name_grammar(pool.names)),
        )
        route, error = Hop.from_call("route", call, at, router_text=call.text), None
    except EndpointError as exc:
        route, error = Hop(node="route", model=pool.router.name, error=str(exc), started_at=at), str(exc)
    hops = [route]
    answer = ""
    if error is None:
        pick = parse_pick(route.router_text or "", pool)
        route.detail = {**route.detail, "picked": pick or pool.cheapest().name, "fallback": pick is None}
        hop, error = await _call_hop(
            service,
            "answer",
            pick or pool.cheapest().name,
            item.prompt,
            service.settings.response_max_tokens,
            system=prompts.POOL_MODEL_SYSTEM,
        )
        hops.append(hop)
        answer = stated_answer(item, hop.response)
    return service.record_direct(
        item.prompt,
        graph="prompt-router",
        hops=hops,
        answer=answer,
        error=error,
        latency_s=time.perf_counter() - started,
    )


def oracle_record(item_records: dict[str, dict[str, Any]], pool: Pool) -> dict[str, Any] | None:
    """From one item's ``single:<model>`` records: the cheapest correct one, else the cheapest model's."""
    singles = {m: r for m, r in item_records.items() if m.startswith("single:")}
    if not singles:
        return None
    correct = [r for r in singles.values() if r["correct"] >= 1.0]
    if correct:
        chosen = min(correct, key=lambda r: (r["cost"], r["method"]))
    else:
        cheapest = f"single:{pool.cheapest().name}"
        chosen = singles.get(cheapest) or min(singles.values(), key=lambda r: (r["cost"], r["method"]))
    return {**chosen, "method": "oracle", "picked": chosen["method"].removeprefix("single:")}
