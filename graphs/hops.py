"""The hop: one model call (or refused call) made while answering, as every graph reports it.

Graphs append hops to their state; the service persists each one as the stream yields it. Shared by all
graphs so that storage, the CLI and the UI read one shape.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from graphs.ports import CallResult


class Hop(BaseModel):
    node: str = Field(description="Graph node that made the call: think, route, answer, decompose, ...")
    model: str | None = Field(default=None, description="Pool entry that produced the text.")
    sub_query: str | None = Field(default=None, description="What the router asked a pool model.")
    router_text: str | None = Field(default=None, description="The router's own generated text.")
    response: str | None = Field(default=None, description="A pool model's reply.")
    subtask_id: str | None = Field(default=None, description="R2-Reasoner subtask this hop served.")
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = Field(default=0.0, description="USD at the model's pool price.")
    latency_s: float = 0.0
    error: str | None = None
    started_at: float = Field(default_factory=time.time, description="Unix time the call started.")
    detail: dict[str, object] = Field(default_factory=dict, description="Structured extras (plans, picks).")

    @classmethod
    def from_call(cls, node: str, call: CallResult, started_at: float, **fields: Any) -> Hop:
        detail = dict(fields.pop("detail", None) or {})
        if call.cache is not None:
            detail["cache"] = call.cache  # replay cache hit or miss
        return cls(
            node=node,
            model=call.model,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cost=call.cost,
            latency_s=call.latency_s,
            started_at=started_at,
            detail=detail,
            **fields,
        )


def total_cost(hops: list[Hop]) -> float:
    return sum(h.cost for h in hops)
