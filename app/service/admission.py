"""What the service refuses before any model is called, so that an entry point can answer at once with the
right status: a question too long for the context window of the model that reads it first (the client's
to fix: :class:`ContextLengthError`) and a model that is down (:class:`ModelDownError`: retry later)."""

from __future__ import annotations

from collections.abc import Sequence

from app.config import Settings
from app.pool import ModelEntry, Pool
from app.pool.circuit import ModelDownError
from app.service.registry import (
    REGISTRY,
    ContextLengthError,
    QuestionError,
    RunOptions,
    graph_spec,
    run_options,
)
from graphs.ports import estimate_tokens

MESSAGE_OVERHEAD_TOKENS = 8
"""Chat-template tokens around each message (role markers, separators)."""


def prompt_tokens(entry: ModelEntry, messages: Sequence[tuple[str, str]]) -> int:
    """Tokens the entry will read for ``messages``, estimated as every cost estimate is (4 characters a
    token, which overcounts English): a base model reads only the last user turn inside its template."""
    if entry.mode == "completion":
        last = next((text for role, text in reversed(messages) if role == "human"), "")
        return estimate_tokens((entry.prompt_template or "") + last)
    return sum(estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS for _, text in messages)


def check_fits(
    pool: Pool, entry: ModelEntry, messages: Sequence[tuple[str, str]], reply_tokens: int, what: str
) -> None:
    """Raise :class:`ContextLengthError` unless the prompt and the reply fit the entry's context window
    (unknown for hosted APIs, which say so themselves)."""
    window = pool.context_tokens(entry)
    if window is None:
        return
    needed = prompt_tokens(entry, messages)
    if needed + reply_tokens <= window:
        return
    over_chars = (needed + reply_tokens - window) * 4
    raise ContextLengthError(
        f"{what} is about {needed:,} tokens, but {entry.name} holds {window:,} tokens per request, "
        f"{reply_tokens:,} of them for its reply: shorten the messages by about {over_chars:,} characters"
    )


def check_question(
    settings: Settings,
    pool: Pool,
    question: str,
    graph: str,
    budget_usd: float | None,
    max_turns: int | None,
) -> RunOptions:
    """A run's options, or why it cannot start: an empty question, a bad option, an unknown graph, or a
    question whose router prompt does not fit the router's context window."""
    if not question or not question.strip():
        raise QuestionError("the question is empty")
    options = run_options(settings, graph, budget_usd, max_turns)
    prompt = graph_spec(graph).first_prompt(question, pool, options)
    check_fits(pool, pool.router, prompt, settings.router_max_tokens, "the question with its context")
    return options


def check_call(
    settings: Settings, pool: Pool, name: str, messages: Sequence[tuple[str, str]], max_tokens: int | None
) -> tuple[ModelEntry, int]:
    """The entry and reply cap of a direct call to a pool model, or why it cannot fit."""
    entry = pool.get(name)
    cap = max_tokens or settings.response_max_tokens
    check_fits(pool, entry, messages, cap, "the conversation")
    return entry, cap


def target_entry(pool: Pool, target: str) -> ModelEntry:
    """The model a request for ``target`` cannot do without: a graph's router, or the pool model itself."""
    return pool.router if target in REGISTRY else pool.get(target)


def outage(pool: Pool, target: str) -> ModelDownError | None:
    """Why a request for ``target`` (a graph or a pool model) would fail now because a model is down."""
    entry = target_entry(pool, target)
    found = pool.circuits.outage(entry.name)
    return None if found is None else ModelDownError(entry.name, found)
