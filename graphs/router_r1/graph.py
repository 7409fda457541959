"""Wiring of the Router-R1 graph. The compiled ``graph`` is a LangChain Runnable."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graphs.router_r1.nodes import (
    after_integrate,
    after_think,
    answer,
    force_answer,
    integrate,
    relay,
    route,
    think,
)
from graphs.router_r1.state import InputState, OutputState, RouterR1Context, State

builder = StateGraph(
    State, context_schema=RouterR1Context, input_schema=InputState, output_schema=OutputState
)
builder.add_node("think", think)
builder.add_node("route", route)
builder.add_node("integrate", integrate)
builder.add_node("answer", answer)
builder.add_node("force_answer", force_answer)
builder.add_node("relay", relay)

builder.add_edge(START, "think")
builder.add_conditional_edges("think", after_think)
builder.add_edge("route", "integrate")
builder.add_conditional_edges("integrate", after_integrate)
builder.add_edge("answer", END)
builder.add_edge("force_answer", END)
builder.add_edge("relay", END)

graph = builder.compile(name="router-r1")
