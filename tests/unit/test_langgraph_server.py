"""The LangGraph Server factories over a scripted pool: a JSON context becomes the graph's runtime context."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from app import langgraph_server
from app.config import Settings
from app.langgraph_server import Hosted, R2Options, RouterR1Options
from tests.fakes import ROUTER, SMALL
from tests.unit.test_langchain import routing_pool


@pytest.fixture
def process(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hosted]:
    """This process's pool, as the factory would have started it (scripted: no servers)."""
    hosted = Hosted(Settings(budget_usd=0.02, max_turns=3, response_max_tokens=40), routing_pool(2), None)
    monkeypatch.setattr(langgraph_server, "_hosted", hosted)
    yield hosted


def test_unset_options_come_from_the_settings_and_the_rest_from_the_graph_context(process: Hosted) -> None:
    options = RouterR1Options()
    assert options.budget_usd == 0.02 and options.max_turns == 3
    assert options.pool is process.pool and options.response_max_tokens == 40
    assert options.use_grammar is True  # a graph context field the options do not declare
    given = RouterR1Options(budget_usd=0.5, max_turns=1)
    assert given.budget_usd == 0.5 and given.max_turns == 1
    r2 = R2Options(max_turns=2)
    assert r2.max_subtasks == 2 and r2.allocation == process.settings.r2_allocation
    with pytest.raises(AttributeError):
        _ = options.no_such_setting


@pytest.mark.parametrize("bad", [{"budget_usd": 0}, {"max_turns": 0}, {"max_turns": 17}, {"max_turns": "x"}])
def test_bad_options_are_refused(process: Hosted, bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        RouterR1Options(**bad)


def test_options_need_the_factory_to_have_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(langgraph_server, "_hosted", None)
    with pytest.raises(RuntimeError, match="factory"):
        RouterR1Options()


def test_factory_graph_runs_with_a_json_context(process: Hosted) -> None:
    graph = asyncio.run(langgraph_server.router_r1())
    assert graph.name == "router-r1" and graph.context_schema is RouterR1Options
    assert set(graph.get_context_jsonschema()["properties"]) == {"budget_usd", "max_turns"}
    # LangGraph Server passes the run's context as a dict; LangGraph builds the options from it.
    state = asyncio.run(graph.ainvoke({"question": "Capital of France?"}, context={"max_turns": 1}))
    assert state["answer"] == "Paris"
    assert [(h.node, h.model) for h in state["hops"]] == [
        ("think", ROUTER),
        ("route", SMALL),
        ("think", ROUTER),
    ]
    r2 = asyncio.run(langgraph_server.r2_reasoner())
    assert r2.name == "r2-reasoner" and r2.context_schema is R2Options
