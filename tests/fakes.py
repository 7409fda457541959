"""Scripted stand-ins for the pool's OpenAI-compatible models: no network, no servers, deterministic.

``ScriptedChatModel`` answers from a script, one entry per call: a string, a callable taking the messages
and returning a string, or an exception instance to raise. It honours ``stop`` the way llama.cpp and the
OpenAI API do (the reply is cut before the first stop string, which is not returned), reports token usage
(whitespace-separated words) and records every call so tests can inspect what a model was sent.

``make_fake_pool`` builds an :class:`app.pool.Pool` of ``backend: openai`` entries whose clients are
scripted models, handed out through the pool's ``client_factory``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from app.pool import ModelEntry, Pool

Reply = str | Callable[[list[BaseMessage]], str] | BaseException
FAKE_BASE_URL = "http://fake.invalid/v1"

ROUTER = "Fake-Router"
SMALL = "Small-LM"
BIG = "Big-LM"
DEFAULT_ROUTER_PRICES = (0.05, 0.10)
DEFAULT_MODEL_PRICES: dict[str, tuple[float, float]] = {SMALL: (0.10, 0.20), BIG: (1.00, 2.00)}


class ScriptExhausted(AssertionError):
    """A scripted model was called more often than its script allows."""


def count_words(text: str) -> int:
    return len(text.split())


def message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content)


@dataclass
class RecordedCall:
    """One call a scripted model received."""

    messages: list[BaseMessage]
    stop: list[str] | None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [message_text(m) for m in self.messages]

    @property
    def last_text(self) -> str:
        return message_text(self.messages[-1])


class ScriptedChatModel(BaseChatModel):
    """A chat model that plays back ``replies`` in order, one per call."""

    replies: list[Any] = Field(default_factory=list)
    """Strings, callables (messages -> str) or exception instances, consumed in order."""
    delay_s: float = 0.0
    """Seconds each call takes (asyncio.sleep in async calls), to simulate a slow model."""
    max_tokens: int | None = None
    """Cap on reply words; a longer reply is cut and reported with finish_reason 'length'."""
    calls: list[RecordedCall] = Field(default_factory=list)
    position: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    @property
    def remaining(self) -> int:
        return len(self.replies) - self.position

    def _next_reply(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> Any:
        self.calls.append(
            RecordedCall(messages=list(messages), stop=list(stop) if stop else None, kwargs=kwargs)
        )
        if self.position >= len(self.replies):
            raise ScriptExhausted(
                f"scripted model {self.name!r} got call {self.position + 1} "
                f"but has {len(self.replies)} replies"
            )
        reply = self.replies[self.position]
        self.position += 1
        return reply

    def _result(self, messages: list[BaseMessage], reply: Any, stop: list[str] | None) -> ChatResult:
        if isinstance(reply, BaseException):
            raise reply
        text = reply(messages) if callable(reply) else reply
        if not isinstance(text, str):
            raise TypeError(f"scripted reply must be a str, got {type(text).__name__}")
        finish_reason = "stop"
        if stop:
            cuts = [text.find(s) for s in stop if s and s in text]
            if cuts:
                text = text[: min(cuts)]
        if self.max_tokens is not None and count_words(text) > self.max_tokens:
            text = " ".join(text.split()[: self.max_tokens])
            finish_reason = "length"
        input_tokens = max(1, sum(count_words(message_text(m)) for m in messages))
        output_tokens = max(1, count_words(text))
        message = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
            response_metadata={"finish_reason": finish_reason, "model_name": self.name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._next_reply(messages, stop, kwargs)
        if self.delay_s:
            time.sleep(self.delay_s)
        return self._result(messages, reply, stop)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._next_reply(messages, stop, kwargs)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._result(messages, reply, stop)


class ScriptedClientFactory:
    """A ``Pool.client_factory`` handing out one scripted model per entry name, whatever the loop or cap."""

    def __init__(self, models: Mapping[str, ScriptedChatModel]) -> None:
        self.models = {name.lower(): model for name, model in models.items()}
        self.requests: list[tuple[str, str, int]] = []

    def __call__(self, entry: ModelEntry, kind: str, max_tokens: int) -> ScriptedChatModel:
        self.requests.append((entry.name, kind, max_tokens))
        if kind != "chat":
            raise AssertionError(f"fake pool serves chat models only; {entry.name!r} was asked for {kind}")
        return self.models[entry.name.lower()]


def fake_entry(name: str, price_in: float, price_out: float, **fields: Any) -> ModelEntry:
    return ModelEntry(
        name=name,
        backend="openai",
        base_url=FAKE_BASE_URL,
        price_in=price_in,
        price_out=price_out,
        descriptor=fields.pop("descriptor", f"{name}, a scripted test model."),
        **fields,
    )


def make_fake_pool(
    scripts: Mapping[str, Sequence[Reply]] | None = None,
    *,
    router: str = ROUTER,
    router_prices: tuple[float, float] = DEFAULT_ROUTER_PRICES,
    models: Mapping[str, tuple[float, float]] | None = None,
    delay_s: float | Mapping[str, float] = 0.0,
    max_tokens: Mapping[str, int] | None = None,
) -> Pool:
    """A pool of scripted ``backend: openai`` entries: ``scripts`` maps entry names (router too) to replies.

    ``models`` maps candidate names to (price_in, price_out) in USD per 1M tokens; by default the pool has
    ``Small-LM`` ($0.10/$0.20) and ``Big-LM`` ($1.00/$2.00), routed by ``Fake-Router`` ($0.05/$0.10).
    """
    scripts = dict(scripts or {})
    model_prices = dict(DEFAULT_MODEL_PRICES if models is None else models)
    router_entry = fake_entry(router, *router_prices)
    entries = [fake_entry(name, *prices) for name, prices in model_prices.items()]
    known = {e.name.lower(): e.name for e in [router_entry, *entries]}
    unknown = [name for name in scripts if name.lower() not in known]
    if unknown:
        raise ValueError(
            f"scripts for entries not in the fake pool: {unknown}; it has {list(known.values())}"
        )
    scripts_by_key = {name.lower(): list(replies) for name, replies in scripts.items()}
    delays = delay_s if isinstance(delay_s, Mapping) else dict.fromkeys(known.values(), delay_s)
    delays = {k.lower(): v for k, v in delays.items()}
    caps = {k.lower(): v for k, v in (max_tokens or {}).items()}
    fakes = {
        name: ScriptedChatModel(
            replies=scripts_by_key.get(key, []),
            delay_s=delays.get(key, 0.0),
            max_tokens=caps.get(key),
            name=name,
        )
        for key, name in known.items()
    }
    return Pool(router_entry, entries, client_factory=ScriptedClientFactory(fakes))


def fake(pool: Pool, name: str) -> ScriptedChatModel:
    """The scripted model behind ``name`` in a pool built by :func:`make_fake_pool`."""
    factory = pool.client_factory
    assert isinstance(factory, ScriptedClientFactory), "not a fake pool"
    return factory.models[name.lower()]


def think_route(model: str, query: str) -> str:
    """A well-formed Router-R1 step that routes ``query`` to ``model``."""
    return f"<think>I should ask another model.</think>\n<search> {model}: {query} </search>"


def think_answer(answer: str) -> str:
    """A well-formed Router-R1 step that answers."""
    return f"<think>I know enough now.</think>\n<answer> {answer} </answer>"
