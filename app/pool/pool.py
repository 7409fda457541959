"""The pool: the router and candidate entries, where each is served, and the calls the graphs make
through :class:`graphs.ports.ModelPool` — every call priced at the entry's prices (the one place cost is
computed), recorded in the replay cache and, when the mode allows, replayed from it."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.pool import transport
from app.pool.circuit import Circuits
from app.pool.entries import Backend, ModelEntry, PoolError
from app.pool.keys import CacheMode, ResponseCache, normalise, request_key, sha256
from graphs.ports import CallResult, Constraint, EndpointError

ClientFactory = Callable[[ModelEntry, str, int], Any]
"""(entry, 'chat' | 'completion', max_tokens) -> a LangChain chat model or LLM; tests inject scripted ones."""
_RENDERED_PROMPTS = 256
"""Chat-template renderings kept per pool: one per distinct router prompt (a question and its pool)."""
DEFAULT_TIMEOUT_S: dict[Backend, float] = {"llamacpp": 300.0, "vllm": 120.0, "openai": 60.0, "recorded": 60.0}
"""Seconds one call may take, per backend, for an entry without ``timeout_s`` (and no settings override).
llama.cpp on a CPU shares its cores and slots among every model and request (a 512-token reply of a 1.5B
model queued behind three others takes minutes); a GPU decodes fast; a hosted API answers in seconds or
has a problem."""


class Pool:
    """The router and candidate models, their endpoints, and clients to call them."""

    def __init__(
        self,
        router: ModelEntry,
        models: Sequence[ModelEntry],
        source: Path | None = None,
        client_factory: ClientFactory | None = None,
        *,
        outcome_paths: dict[str, Path] | None = None,
    ) -> None:
        self.router = router
        self.models = list(models)
        self.source = source
        self._by_name = {m.name.lower(): m for m in self.models}
        self._endpoints: dict[str, str] = {}
        self._context: dict[str, int] = {}
        self._clients: dict[tuple[str, int, str, int], Any] = {}
        self._rendered: OrderedDict[str, str] = OrderedDict()
        self.timeout_s: float | None = None
        """The settings' timeout for entries without their own; None: the backend's default."""
        self.circuits = Circuits()
        self.client_factory = client_factory
        self.cache: ResponseCache | None = None
        self.cache_mode: CacheMode = "off"
        self._outcome_paths = dict(outcome_paths or {})

    # -- lookup -----------------------------------------------------------------------------------------
    def get(self, name: str) -> ModelEntry:
        """The candidate called ``name`` (case-insensitive), or the router by its name."""
        key = name.strip().lower()
        if key in self._by_name:
            return self._by_name[key]
        if key == self.router.name.lower():
            return self.router
        raise PoolError(f"unknown model {name!r}; the pool has {', '.join(self.names)}")

    def find(self, name: str) -> ModelEntry | None:
        return self._by_name.get(name.strip().lower())

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def all_entries(self) -> list[ModelEntry]:
        return [self.router, *self.models]

    def cheapest(self) -> ModelEntry:
        return min(self.models, key=lambda m: (m.price_in + m.price_out, m.name))

    def most_expensive(self) -> ModelEntry:
        return max(self.models, key=lambda m: (m.price_in + m.price_out, m.name))

    def snapshot(self) -> dict[str, Any]:
        """Prices and descriptors in force now, for the trace store."""
        return {
            "source": str(self.source) if self.source else None,
            "router": self.router.model_dump(),
            "models": [m.model_dump() for m in self.models],
        }

    # -- endpoints --------------------------------------------------------------------------------------
    def bind_endpoint(self, name: str, base_url: str, context_tokens: int | None = None) -> None:
        """Where a local model listens (base URL ending in /v1), how many tokens one request may hold there.
        Called from the supervisor's thread too: the client cache is copied (atomically) before filtering."""
        self._endpoints[name.lower()] = base_url.rstrip("/")
        if context_tokens is not None:
            self._context[name.lower()] = context_tokens
        self._clients = {k: v for k, v in dict(self._clients).items() if k[0] != name.lower()}

    def context_tokens(self, entry: ModelEntry) -> int | None:
        """Tokens one request to the entry may hold (prompt and reply), when known (self-hosted)."""
        return self._context.get(entry.name.lower())

    def timeout_for(self, entry: ModelEntry) -> float:
        """Seconds one call to the entry may take: its own ``timeout_s``, else the settings', else its
        backend's default (:data:`DEFAULT_TIMEOUT_S`)."""
        return entry.timeout_s or self.timeout_s or DEFAULT_TIMEOUT_S[entry.backend]

    def base_url(self, entry: ModelEntry) -> str:
        bound = self._endpoints.get(entry.name.lower())
        if bound:
            return bound
        if entry.base_url:
            return entry.base_url.rstrip("/")
        raise EndpointError(entry.name, f"no server is running for this {entry.backend} model")

    def with_router(self, router: ModelEntry) -> Pool:
        """The same pool with another router entry (e.g. a trained checkpoint)."""
        pool = Pool(router, self.models, self.source, self.client_factory, outcome_paths=self._outcome_paths)
        pool._endpoints, pool._context = dict(self._endpoints), dict(self._context)
        pool.timeout_s, pool.circuits = self.timeout_s, self.circuits
        pool.cache, pool.cache_mode = self.cache, self.cache_mode
        return pool

    def outcomes_path(self, entry: ModelEntry) -> Path:
        """The outcome file of a ``backend: recorded`` entry (a relative path is beside the pool file)."""
        return self._outcome_paths.get(entry.name.lower()) or Path(str(entry.outcomes))

    async def health(self, entry: ModelEntry) -> bool:
        """Whether the entry's endpoint answers /models now."""
        try:
            base_url = self.base_url(entry)
        except EndpointError:
            return False
        return await transport.models_endpoint_ok(entry, base_url)

    # -- the graphs' port (graphs.ports.ModelPool) ------------------------------------------------------
    async def ask(
        self, name: str, query: str, *, system: str | None = None, max_tokens: int = 512
    ) -> CallResult:
        """Send one question to a pool model in its declared mode (chat, or few-shot completion)."""
        entry = self.get(name)
        if entry.backend == "recorded":
            from app.pool.recorded import replay

            return replay(entry, self.outcomes_path(entry), query)
        if entry.mode == "completion":
            return await self.complete(entry, _fill(entry, query), max_tokens=max_tokens)
        return await self.chat(entry, _ask_messages(query, system), max_tokens=max_tokens)

    async def generate(
        self,
        name: str,
        messages: Sequence[tuple[str, str]],
        *,
        max_tokens: int,
        continuation: str | None = None,
        stop: Sequence[str] | None = None,
        constraint: Constraint | None = None,
    ) -> CallResult:
        """One generation for ``messages``; see :meth:`graphs.ports.ModelPool.generate`.

        A self-hosted model continues one growing text: its chat template rendered once (cached), then the
        completions endpoint — the exact sequence a trainer sees. A hosted model gets the messages, with
        the continuation as the assistant's turn to carry on. A completion-mode (base) model gets the
        messages' texts joined.
        """
        entry = self.get(name)
        extra = transport.constraint_body(entry, constraint)
        if entry.mode == "completion":
            prompt = "\n\n".join(text for _, text in messages) + "\n" + (continuation or "")
            return await self.complete(entry, prompt, max_tokens=max_tokens, stop=stop, extra_body=extra)
        if continuation is None:
            return await self.chat(entry, messages, max_tokens=max_tokens, stop=stop, extra_body=extra)
        if not entry.self_hosted:
            turns = [*messages, *([("ai", continuation)] if continuation else [])]
            return await self.chat(entry, turns, max_tokens=max_tokens, stop=stop, extra_body=extra)
        started = time.perf_counter()
        prompt = await self._render(entry, messages)
        rendered_s = time.perf_counter() - started
        call = await self.complete(
            entry, prompt + continuation, max_tokens=max_tokens, stop=stop, extra_body=extra
        )
        # Rendering is the model's own server's time: counted in the call that needed it.
        return replace(call, latency_s=call.latency_s + rendered_s) if rendered_s > 0.001 else call

    async def render_chat(self, entry: ModelEntry, messages: Sequence[tuple[str, str]]) -> str:
        """The prompt text a self-hosted model sees for ``messages`` under its own chat template."""
        payload = [{"role": "user" if r == "human" else r, "content": c} for r, c in messages]
        self.circuits.check(entry.name)
        return await transport.render_chat(entry, self.base_url(entry), payload, self.timeout_for(entry))

    async def _render(self, entry: ModelEntry, messages: Sequence[tuple[str, str]]) -> str:
        key = sha256([entry.name, entry.gguf, entry.hf_model, [list(m) for m in messages]])
        rendered = self._rendered.get(key)
        if rendered is None:
            rendered = self._rendered[key] = await self.render_chat(entry, messages)
            if len(self._rendered) > _RENDERED_PROMPTS:
                self._rendered.popitem(last=False)
        return rendered

    # -- calls ------------------------------------------------------------------------------------------
    def seed(
        self,
        name: str,
        query: str,
        response: str,
        *,
        system: str | None = None,
        max_tokens: int = 512,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        """Record a known answer in the replay cache exactly as ``ask`` would look it up."""
        if self.cache is None:
            raise PoolError("the pool has no replay cache to seed")
        entry = self.get(name)
        stop = list(entry.stop) or None
        prompt: Any
        if entry.mode == "completion":
            kind, prompt = "completion", _fill(entry, query)
        else:
            kind, prompt = "chat", normalise(_ask_messages(query, system))
        key, prompt_hash, params = request_key(
            entry.name, entry.served_id, kind, prompt, max_tokens, stop, None
        )
        recorded = {"text": response, "input_tokens": input_tokens, "output_tokens": output_tokens}
        self.cache.put(key, entry.name, prompt_hash, params, {**recorded, "finish_reason": "stop"})

    async def chat(
        self,
        entry: ModelEntry,
        messages: Sequence[tuple[str, str]],
        *,
        max_tokens: int,
        stop: Sequence[str] | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> CallResult:
        stops = list(stop or entry.stop) or None

        async def live() -> dict[str, Any]:
            message = await self._client(entry, max_tokens, "chat").ainvoke(
                list(messages), stop=stops, extra_body=extra_body
            )
            usage = message.usage_metadata or {}
            return {
                "text": str(message.content),
                "input_tokens": int(usage.get("input_tokens", 0)),
                "output_tokens": int(usage.get("output_tokens", 0)),
                "finish_reason": (message.response_metadata or {}).get("finish_reason"),
            }

        return await self._call(entry, "chat", normalise(messages), max_tokens, stops, extra_body, live)

    async def complete(
        self,
        entry: ModelEntry,
        prompt: str,
        *,
        max_tokens: int,
        stop: Sequence[str] | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> CallResult:
        """Raw text continuation through the completions endpoint."""
        stops = list(stop or entry.stop) or None

        async def live() -> dict[str, Any]:
            result = await self._client(entry, max_tokens, "completion").agenerate(
                [prompt], stop=stops, extra_body=extra_body
            )
            generation = result.generations[0][0]
            usage = (result.llm_output or {}).get("token_usage", {})
            return {
                "text": generation.text,
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "output_tokens": int(usage.get("completion_tokens", 0)),
                "finish_reason": (generation.generation_info or {}).get("finish_reason"),
            }

        # A continuation depends on every character of the prompt: no whitespace normalisation here.
        return await self._call(entry, "completion", prompt, max_tokens, stops, extra_body, live)

    def _client(self, entry: ModelEntry, max_tokens: int, kind: str) -> Any:
        # Async HTTP clients belong to the event loop that made them: key the cache by loop too.
        key = (entry.name.lower(), max_tokens, kind, id(asyncio.get_running_loop()))
        client = self._clients.get(key)
        if client is None:
            if self.client_factory is not None:
                client = self.client_factory(entry, kind, max_tokens)
            else:
                url, timeout = self.base_url(entry), self.timeout_for(entry)
                client = transport.make_client(entry, url, kind, max_tokens, timeout)
            self._clients[key] = client
        return client

    async def _call(
        self,
        entry: ModelEntry,
        kind: str,
        prompt: Any,
        max_tokens: int,
        stop: list[str] | None,
        extra_body: dict[str, Any] | None,
        live: Callable[[], Awaitable[dict[str, Any]]],
    ) -> CallResult:
        """One call, served from the replay cache when the mode allows, recorded there when live."""
        key, prompt_hash, params = request_key(
            entry.name, entry.served_id, kind, prompt, max_tokens, stop, extra_body
        )
        started = time.perf_counter()
        if self.cache is not None and self.cache_mode != "off":
            recorded = self.cache.get(key)
            if recorded is not None:
                return _result(entry, recorded, time.perf_counter() - started, cache="hit")
            if self.cache_mode == "only":
                raise EndpointError(entry.name, "replay cache only: no recorded response for this request")
        self.circuits.check(entry.name)  # a model that is down fails now, saying when to retry
        try:
            response = await live()
        except Exception as exc:  # any transport or API failure is the endpoint's
            raise EndpointError(entry.name, transport.reason(exc)) from exc
        latency = time.perf_counter() - started
        if self.cache is not None:
            self.cache.put(key, entry.name, prompt_hash, params, response)
        return _result(entry, response, latency, cache="miss" if self.cache is not None else None)


def _fill(entry: ModelEntry, query: str) -> str:
    return (entry.prompt_template or "{query}").format(query=query)


def _ask_messages(query: str, system: str | None) -> list[tuple[str, str]]:
    return [*([("system", system)] if system else []), ("human", query)]


def _result(entry: ModelEntry, response: dict[str, Any], latency_s: float, cache: str | None) -> CallResult:
    tokens_in, tokens_out = int(response["input_tokens"]), int(response["output_tokens"])
    return CallResult(
        model=entry.name,
        text=str(response["text"]),
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost=entry.cost(tokens_in, tokens_out),
        latency_s=latency_s,
        finish_reason=response.get("finish_reason"),
        cache=cache,
    )
