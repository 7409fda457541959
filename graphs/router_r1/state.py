"""State and runtime context of the Router-R1 graph."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated

from typing_extensions import TypedDict  # pydantic (LangGraph Server's schemas) needs it before 3.12

from graphs.hops import Hop
from graphs.ports import ModelPool
from graphs.router_r1.prompts import Action


class InputState(TypedDict):
    question: str
    """The user's question."""


class OutputState(TypedDict, total=False):
    answer: str
    """The final answer ('' when the router produced none)."""
    hops: Annotated[list[Hop], operator.add]
    """Every model call in order, appended by the node that made it."""
    error: str | None
    """Why the run ended without a clean answer (malformed router output), if it did."""
    transcript: str
    """Everything the router has generated or been given after the prompt: the Router-R1 trajectory."""


class State(InputState, OutputState, total=False):
    action: Action
    """The action parsed from the latest router step."""
    information: str
    """The information block the latest route produced, waiting to be integrated."""
    turns: int
    """Route calls made so far (refused and failed calls count)."""


@dataclass(frozen=True)
class RouterR1Context:
    """Per-invocation settings, passed as LangGraph runtime context (never read from globals)."""

    pool: ModelPool
    budget_usd: float = 0.01
    max_turns: int = 4
    response_max_tokens: int = 512
    router_max_tokens: int = 320
    use_grammar: bool = True
    min_routes: int = 0
    """Route calls the grammar demands before it allows an answer (an untrained router rarely consults)."""
