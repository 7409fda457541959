"""Wiring of the R2-Reasoner graph. The compiled ``graph`` is a LangChain Runnable.

decompose → allocate → wave ⇉ execute (one branch per ready subtask, via Send) → wave … → aggregate.
Each wave is two supersteps: with sequential execution, escalation and many subtasks, raise LangGraph's
``recursion_limit`` to at least :func:`recursion_limit`.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graphs.r2_reasoner.allocation import allocate
from graphs.r2_reasoner.nodes import aggregate, decompose, dispatch, execute, wave
from graphs.r2_reasoner.state import InputState, OutputState, R2Context, State, SubtaskTask

builder = StateGraph(State, context_schema=R2Context, input_schema=InputState, output_schema=OutputState)
builder.add_node("decompose", decompose)
builder.add_node("allocate", allocate)
builder.add_node("wave", wave)
# Branches get a Send payload, not the state. Under mypy, langgraph's add_node overloads reject this
# node with a TypedDict input_schema; the call is what the LangGraph docs prescribe for Send targets.
builder.add_node("execute", execute, input_schema=SubtaskTask)  # type: ignore[arg-type]
builder.add_node("aggregate", aggregate)

builder.add_edge(START, "decompose")
builder.add_edge("decompose", "allocate")
builder.add_edge("allocate", "wave")
builder.add_conditional_edges("wave", dispatch, ["execute", "aggregate"])
builder.add_edge("execute", "wave")
builder.add_edge("aggregate", END)

graph = builder.compile(name="r2-reasoner")


def recursion_limit(max_subtasks: int) -> int:
    """Supersteps the worst run needs: every subtask (the steps and the question) alone in its wave, each
    re-run once, plus the ends."""
    return 2 * (2 * (max_subtasks + 1)) + 8
