"""State and runtime context of the R2-Reasoner graph."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, NotRequired

from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict  # pydantic (LangGraph Server's schemas) needs it before 3.12

from graphs.hops import Hop
from graphs.ports import ModelPool
from graphs.r2_reasoner.prompts import Subtask


class SubtaskResult(BaseModel):
    """What one subtask's (latest) execution produced."""

    model_config = ConfigDict(frozen=True)

    model: str
    answer: str
    failed: str | None = None
    """Why the answer is not usable: 'empty', 'refusal', 'endpoint error', 'budget exceeded'; None if fine."""
    escalated_from: str | None = None
    escalate_to: str | None = None
    """Set while the subtask waits for its one re-run on the next pricier model."""

    @property
    def final(self) -> bool:
        return self.escalate_to is None


def merge_results(
    left: dict[str, SubtaskResult], right: dict[str, SubtaskResult]
) -> dict[str, SubtaskResult]:
    """Reducer of parallel execute branches: each writes its own subtask's result (a re-run replaces it)."""
    return {**left, **right}


class InputState(TypedDict):
    question: str
    """The user's question."""
    subtasks: NotRequired[list[dict[str, Any]]]
    """Optional fixed decomposition ({id, text, depends_on} each): skips the decompose call (benchmarks)."""


class OutputState(TypedDict, total=False):
    answer: str
    """The final answer, in the question's answer format ('' when none could be composed)."""
    hops: Annotated[list[Hop], operator.add]
    """Every model call (or refused call); parallel branches append in completion order."""
    error: str | None
    """Why the run ended without a clean answer (malformed decomposition, failed aggregation), if it did."""
    plan: list[Subtask]
    """The decomposition that was executed (the direct-answer fallback when the router's was malformed)."""
    allocation: dict[str, str]
    """Subtask id → pool model name."""


class State(InputState, OutputState, total=False):
    fallback: bool
    """The decomposition was malformed: one subtask (the question) answered by the default model."""
    results: Annotated[dict[str, SubtaskResult], merge_results]
    """Subtask id → its result so far."""
    waves: int
    """Execution waves scheduled so far."""


class SubtaskTask(TypedDict):
    """What ``dispatch`` sends to one ``execute`` branch."""

    subtask: Subtask
    model: str
    prompt: str
    reserved_usd: float
    """Spent plus the estimates of the calls sent before this one in the same wave (budget reservation)."""
    escalated_from: str | None


@dataclass(frozen=True)
class R2Context:
    """Per-invocation settings, passed as LangGraph runtime context (never read from globals)."""

    pool: ModelPool
    budget_usd: float = 0.01
    max_subtasks: int = 4
    allocation: str = "router"
    """'router' (levels easy/medium/hard or model names), 'cheapest', 'strongest' or 'fixed:<model>'."""
    escalate: bool = False
    """Re-run once on the next pricier model a subtask whose answer is empty, a refusal or an error."""
    aggregator: str | None = None
    """Pool entry that composes the final answer; None: the router."""
    response_max_tokens: int = 512
    router_max_tokens: int = 320
    answer_max_tokens: int = 48
    parallel: bool = True
    """False: one ready subtask per wave (sequential execution, for the benchmark)."""
    use_schema: bool = True
    """Constrain self-hosted routers with the JSON schemas / answer grammars."""
