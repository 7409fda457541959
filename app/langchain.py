"""A LangChain chat model that answers each call by running a routegraph graph (Router-R1 by default).

``RouterChatModel`` drops into LCEL like any chat model: ``prompt | RouterChatModel() | StrOutputParser()``.
Every call is one stored run; hops are reported as custom callback events named ``routegraph_hop``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from app.config import Settings, load_settings
from app.service import GRAPHS, RouteGraphService, RunResult
from app.service.conversation import question_from_turns
from graphs.hops import Hop

HOP_EVENT = "routegraph_hop"


class RouterRunError(RuntimeError):
    """A routegraph run ended with status 'failed'; ``result`` holds the stored run."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(f"routegraph run {result.run_id} ({result.graph}) failed: {result.error}")
        self.result = result


def question_from_messages(messages: list[BaseMessage], include_history: bool = True) -> str:
    """The last human message, with earlier messages prepended as context when ``include_history``."""
    # A HumanMessageChunk is a human turn too, though its type names the class.
    turns = [("human" if isinstance(m, HumanMessage) else m.type, m.text) for m in messages]
    question = question_from_turns(turns, "human", include_history=include_history)
    if question is None:
        raise ValueError("RouterChatModel needs at least one human message")
    return question


def hop_dict(hop: Hop) -> dict[str, Any]:
    return hop.model_dump(exclude={"detail", "router_text", "response"})


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """``text`` up to the first occurrence of any stop sequence (which is dropped), as an API would."""
    cut = min((i for s in stop or [] if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


class RouterChatModel(BaseChatModel):
    """Runs a routegraph graph per call. Give ``service=`` or let it build one from ``pool``/``settings``.

    ``model=`` on a call (``invoke(..., model="r2-reasoner")``, ``bind``) picks another graph for it; ``stop``
    sequences cut the final answer. Passes LangChain's standard unit and integration suites.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    service: Any = Field(default=None, exclude=True)
    """A RouteGraphService (typed loosely: pydantic cannot validate its lock and loop fields)."""
    graph: str = "router-r1"
    pool: str | Path | None = None
    """Pool YAML file for the lazily built service (default: the settings' pool)."""
    budget: float | None = None
    max_turns: int | None = None
    settings: Settings | None = Field(default=None, exclude=True)
    start_servers: bool = True
    include_history: bool = True
    stop: list[str] | None = None
    """Stop sequences applied to the final answer (the graph's own model calls keep theirs)."""
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "routegraph"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"graph": self.graph, "budget": self.budget, "max_turns": self.max_turns}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Tracing parameters: the graph (or a per-call ``model=`` override) is the model's name."""
        name = kwargs.get("model") or self.graph  # reported as given: tracing never raises
        params = LangSmithParams(ls_provider="routegraph", ls_model_name=str(name), ls_model_type="chat")
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _graph(self, kwargs: dict[str, Any]) -> str:
        """The graph a call runs: ``model=`` given to invoke/stream/bind picks another one."""
        graph = kwargs.get("model") or self.graph
        if graph not in GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; RouterChatModel runs one of {', '.join(GRAPHS)}")
        return str(graph)

    def get_service(self) -> RouteGraphService:
        with self._lock:
            if self.service is None:
                settings = self.settings or load_settings()
                if self.pool is not None:
                    settings = settings.model_copy(update={"pool_file": Path(self.pool)})
                self.service = RouteGraphService.create(settings, start_servers=self.start_servers)
            service: RouteGraphService = self.service
            return service

    def _options(self, graph: str) -> dict[str, Any]:
        return {"graph": graph, "budget_usd": self.budget, "max_turns": self.max_turns}

    def _message(self, result: RunResult, stop: list[str] | None, cls: type[AIMessage] = AIMessage) -> Any:
        if result.status == "failed":
            raise RouterRunError(result)
        usage = UsageMetadata(
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            total_tokens=result.input_tokens + result.output_tokens,
        )
        metadata = {
            "run_id": result.run_id,
            "graph": result.graph,
            "total_cost": result.total_cost,
            "status": result.status,
            "error": result.error,
            "latency_s": result.latency_s,
            "hops": [hop_dict(h) for h in result.hops],
            "model_name": result.graph,
        }
        text = cut_at_stop(result.answer, stop or self.stop)
        if cls is AIMessageChunk:  # the whole answer is one chunk: the last one
            return AIMessageChunk(
                content=text, usage_metadata=usage, response_metadata=metadata, chunk_position="last"
            )
        return cls(content=text, usage_metadata=usage, response_metadata=metadata)

    # -- sync -----------------------------------------------------------------------------------------
    def _run(
        self,
        messages: list[BaseMessage],
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> RunResult:
        question = question_from_messages(messages, self.include_history)
        events = _sync_events(run_manager)

        def on_hop(hop: Hop) -> None:
            if events is not None and run_manager is not None:
                events.on_custom_event(HOP_EVENT, hop_dict(hop), run_id=run_manager.run_id)

        return self.get_service().ask(question, on_hop=on_hop, **self._options(self._graph(kwargs)))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = self._run(messages, run_manager, kwargs)
        message = self._message(result, stop)
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"run_id": result.run_id})

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        result = self._run(messages, run_manager, kwargs)
        chunk = ChatGenerationChunk(message=self._message(result, stop, AIMessageChunk))
        if run_manager is not None:
            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        yield chunk

    # -- async ----------------------------------------------------------------------------------------
    async def _arun(
        self,
        messages: list[BaseMessage],
        run_manager: AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> RunResult:
        question = question_from_messages(messages, self.include_history)
        events = _async_events(run_manager)
        async for item in self.get_service().astream(question, **self._options(self._graph(kwargs))):
            if isinstance(item, RunResult):
                return item
            if events is not None and run_manager is not None:
                await events.on_custom_event(HOP_EVENT, hop_dict(item), run_id=run_manager.run_id)
        raise AssertionError("astream always ends with a RunResult")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = await self._arun(messages, run_manager, kwargs)
        message = self._message(result, stop)
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"run_id": result.run_id})

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        result = await self._arun(messages, run_manager, kwargs)
        chunk = ChatGenerationChunk(message=self._message(result, stop, AIMessageChunk))
        if run_manager is not None:
            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        yield chunk


def _sync_events(run_manager: CallbackManagerForLLMRun | None) -> CallbackManager | None:
    if run_manager is None or not run_manager.handlers:
        return None
    return CallbackManager(
        handlers=run_manager.handlers,
        parent_run_id=run_manager.parent_run_id,
        tags=run_manager.tags,
        metadata=run_manager.metadata,
    )


def _async_events(run_manager: AsyncCallbackManagerForLLMRun | None) -> AsyncCallbackManager | None:
    if run_manager is None or not run_manager.handlers:
        return None
    return AsyncCallbackManager(
        handlers=run_manager.handlers,
        parent_run_id=run_manager.parent_run_id,
        tags=run_manager.tags,
        metadata=run_manager.metadata,
    )
