"""RouterChatModel over a scripted pool: LCEL, metadata, batch, streaming, failures and hop events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from app.config import Settings
from app.langchain import HOP_EVENT, RouterChatModel, RouterRunError, question_from_messages
from app.pool import Pool
from app.service import RouteGraphService
from tests.fakes import ROUTER, SMALL, make_fake_pool


def router_reply(messages: list[BaseMessage]) -> str:
    """Route once, then answer: decided from the transcript so concurrent runs stay independent."""
    transcript = " ".join(str(m.content) for m in messages)
    if "Paris." in transcript:
        return "<think>I know enough now.</think>\n<answer> Paris </answer>"
    return f"<think>Ask.</think>\n<search> {SMALL}: capital of France? </search>"


def routing_pool(runs: int = 1) -> Pool:
    return make_fake_pool({ROUTER: [router_reply] * (2 * runs), SMALL: ["Paris."] * runs})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/t.db")


def make_model(settings: Settings, pool: Pool) -> Iterator[RouterChatModel]:
    service = RouteGraphService.create(settings, pool=pool, start_servers=False)
    try:
        yield RouterChatModel(service=service)
    finally:
        service.close()


@pytest.fixture
def model(settings: Settings) -> Iterator[RouterChatModel]:
    yield from make_model(settings, routing_pool(4))


def test_lcel_pipeline_returns_the_answer(model: RouterChatModel) -> None:
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
    assert chain.invoke({"q": "What is the capital of France?"}) == "Paris"


def test_metadata_and_usage(model: RouterChatModel) -> None:
    message = model.invoke("What is the capital of France?")
    assert isinstance(message, AIMessage)
    meta = message.response_metadata
    assert meta["status"] == "ok" and isinstance(meta["run_id"], int) and meta["total_cost"] > 0
    assert [h["node"] for h in meta["hops"]] == ["think", "route", "think"]
    run = model.get_service().get_run(meta["run_id"])
    assert run is not None and run.total_cost == pytest.approx(meta["total_cost"])
    usage = message.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == sum(h["input_tokens"] for h in meta["hops"])
    assert usage["output_tokens"] == sum(h["output_tokens"] for h in meta["hops"])
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_batch_stores_one_trace_per_input(model: RouterChatModel) -> None:
    answers = model.batch([f"Capital of France? ({i})" for i in range(4)])
    assert [a.content for a in answers] == ["Paris"] * 4
    runs = model.get_service().list_runs(limit=100)
    assert len(runs) == 4 and {r.status for r in runs} == {"ok"}
    assert len({a.response_metadata["run_id"] for a in answers}) == 4


def test_stream_and_astream_concatenate_to_the_answer(model: RouterChatModel) -> None:
    chunks = list(model.stream("Capital of France?"))
    assert "".join(str(c.content) for c in chunks) == "Paris"

    async def collect() -> str:
        return "".join([str(c.content) async for c in model.astream("Capital of France?")])

    assert asyncio.run(collect()) == "Paris"


def test_ainvoke_with_config_tags_metadata_and_hop_events(model: RouterChatModel) -> None:
    events: list[tuple[str, Any, list[str] | None, dict[str, Any] | None]] = []

    class Recorder(BaseCallbackHandler):
        def on_custom_event(
            self,
            name: str,
            data: Any,
            *,
            run_id: UUID,
            tags: list[str] | None = None,
            metadata: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            events.append((name, data, tags, metadata))

    configured = model.with_config(tags=["t1"], metadata={"who": "test"}, callbacks=[Recorder()])
    message = asyncio.run(configured.ainvoke("Capital of France?"))
    assert message.content == "Paris"
    assert [e[1]["node"] for e in events] == ["think", "route", "think"]
    assert {e[0] for e in events} == {HOP_EVENT}
    assert events[0][2] is not None and "t1" in events[0][2]
    assert events[0][3] is not None and events[0][3].get("who") == "test"

    events.clear()
    assert model.invoke("Capital of France?", config={"callbacks": [Recorder()]}).content == "Paris"
    assert len(events) == 3


def test_failing_router_raises(settings: Settings) -> None:
    pool = make_fake_pool({ROUTER: [httpx.ReadTimeout("slow")]})
    for model in make_model(settings, pool):
        with pytest.raises(RouterRunError, match="failed") as caught:
            model.invoke("Capital of France?")
        assert caught.value.result.status == "failed"
        assert model.get_service().get_run(caught.value.result.run_id) is not None


def test_question_keeps_earlier_messages_as_context() -> None:
    messages = [SystemMessage("Be brief."), HumanMessage("Hi"), AIMessage("Hello"), HumanMessage("Capital?")]
    question = question_from_messages(messages)
    assert (
        question.endswith("Question: Capital?")
        and "system: Be brief." in question
        and "ai: Hello" in question
    )
    assert question_from_messages(messages, include_history=False) == "Capital?"
    with pytest.raises(ValueError):
        question_from_messages([SystemMessage("x")])


def test_lazy_service_from_pool_file(settings: Settings, tmp_path: Path) -> None:
    model = RouterChatModel(settings=settings, pool=tmp_path / "missing.yaml", start_servers=False)
    assert model.service is None
    with pytest.raises(Exception, match=r"missing\.yaml"):
        model.get_service()


def test_stop_sequences_cut_the_answer(model: RouterChatModel) -> None:
    assert model.invoke("Capital of France?", stop=["ri"]).content == "Pa"
    stopping = model.model_copy(update={"stop": ["is"]})
    assert stopping.invoke("Capital of France?").content == "Par"
    chunks = list(stopping.stream("Capital of France?"))
    assert [c.content for c in chunks] == ["Par"] and chunks[-1].chunk_position == "last"
    assert model._get_ls_params(stop=["x"]) == {
        "ls_provider": "routegraph",
        "ls_model_name": "router-r1",
        "ls_model_type": "chat",
        "ls_stop": ["x"],
    }


def test_model_kwarg_picks_the_graph(model: RouterChatModel) -> None:
    with pytest.raises(ValueError, match="unknown graph 'gpt-9'"):
        model.invoke("Capital of France?", model="gpt-9")
    assert model._get_ls_params(model="r2-reasoner")["ls_model_name"] == "r2-reasoner"
    message = model.invoke("Capital of France?", model="router-r1")
    assert message.response_metadata["model_name"] == "router-r1" and message.content == "Paris"
