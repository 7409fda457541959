"""The model pool: YAML file → typed entries → OpenAI-compatible clients, and the one place cost is computed.

A pool file has a ``router`` entry (the model that routes) and ``models`` (the candidates it routes to).
Every entry is reached through an OpenAI-compatible endpoint: a hosted API (``backend: openai``), an
embedded llama.cpp server (``backend: llamacpp``) or a vLLM server (``backend: vllm``); the last two are
started by :mod:`app.local_models`, which binds their URLs here. ``backend: recorded`` entries replay
recorded scores instead of calling a model (:mod:`app.recorded`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.config import secret_from_env

Backend = Literal["openai", "llamacpp", "vllm", "recorded"]
ClientFactory = Callable[["ModelEntry", str, int], Any]
"""(entry, 'chat' | 'completion', max_tokens) -> a LangChain chat model or LLM; tests inject scripted ones."""
Mode = Literal["chat", "completion"]


CacheMode = Literal["off", "prefer", "only"]


class ResponseCache(Protocol):
    """Where model answers are recorded and replayed from (the trace store's ``model_responses``)."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(
        self, key: str, model: str, prompt_hash: str, params: dict[str, Any], response: dict[str, Any]
    ) -> None: ...


class PoolError(ValueError):
    """The pool file is wrong, or a model name is not in the pool."""


class EndpointError(RuntimeError):
    """A model endpoint is down, slow or answered with an error."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} endpoint failed: {reason}")
        self.model = model
        self.reason = reason


class ModelEntry(BaseModel):
    """One model of the pool, with the descriptors Router-R1 conditions on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    backend: Backend = "openai"
    base_url: str | None = None
    model_id: str | None = Field(default=None, description="Served model id; defaults to the name.")
    api_key_env: str | None = Field(default=None, description="Name of the env var holding the API key.")
    gguf: str | None = Field(default=None, description="llamacpp: a bundled model name or a .gguf path.")
    hf_model: str | None = Field(default=None, description="vllm: HF model id or checkpoint directory.")
    mode: Mode = "chat"
    prompt_template: str | None = Field(default=None, description="completion mode: few-shot, {query}.")
    stop: list[str] = Field(default_factory=list)
    price_in: float = Field(ge=0, description="USD per 1M input tokens.")
    price_out: float = Field(ge=0, description="USD per 1M output tokens.")
    latency_s: float = Field(default=1.0, ge=0, description="Typical latency of one answer, seconds.")
    descriptor: str = Field(min_length=1)
    example_performance: str = ""
    outcomes: str | None = Field(
        default=None, description="recorded: JSONL of {question, scores: {served_id: score}} rows."
    )
    output_tokens: int = Field(default=256, ge=0, description="recorded: output tokens charged per call.")

    @model_validator(mode="after")
    def _backend_fields(self) -> ModelEntry:
        if self.backend == "recorded" and not self.outcomes:
            raise ValueError("backend 'recorded' needs outcomes (a recorded-outcome JSONL path)")
        if self.backend != "recorded" and self.outcomes:
            raise ValueError("outcomes is only for backend 'recorded'")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs a base_url")
        if self.backend == "llamacpp" and not self.gguf:
            raise ValueError("backend 'llamacpp' needs gguf (a bundled model name or a .gguf path)")
        if self.backend == "vllm" and not self.hf_model:
            raise ValueError("backend 'vllm' needs hf_model (HF id or checkpoint directory)")
        if (
            self.mode == "completion"
            and self.prompt_template is not None
            and "{query}" not in self.prompt_template
        ):
            raise ValueError("prompt_template must contain {query}")
        return self

    @property
    def served_id(self) -> str:
        return self.model_id or self.name

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for one call at this entry's prices."""
        return (input_tokens * self.price_in + output_tokens * self.price_out) / 1_000_000


class PoolFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    router: ModelEntry
    models: list[ModelEntry] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        # A field validator, so that the error is located at 'models' rather than the file's root.
        seen: set[str] = set()
        for entry in models:
            if entry.name.lower() in seen:
                raise ValueError(f"model name {entry.name!r} appears twice")
            seen.add(entry.name.lower())
        return models


@dataclass(frozen=True)
class CallResult:
    """What one model call produced and cost."""

    model: str
    text: str
    input_tokens: int
    output_tokens: int
    cost: float
    latency_s: float
    finish_reason: str | None = None
    cache: str | None = None
    """'hit' when served from the replay cache, 'miss' when live and recorded, None with no cache."""
    score: float | None = None
    """backend 'recorded': the score this model got on the query in the outcome file; else None."""


def load_pool(path: str | Path) -> Pool:
    """Read and validate a pool file; every problem names the file, the field and the reason."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PoolError(f"{path}: pool file does not exist") from None
    except yaml.YAMLError as exc:
        raise PoolError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PoolError(f"{path}: a pool file is a mapping with 'router' and 'models'")
    try:
        parsed = PoolFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _describe_location(raw, err["loc"])
            problems.append(f"{loc}: {err['msg']}")
        raise PoolError(f"{path}: " + "; ".join(problems)) from None
    pool = Pool(parsed.router, parsed.models, source=path)
    for entry in pool.all_entries():
        if entry.backend == "recorded" and entry.outcomes and not Path(entry.outcomes).is_absolute():
            # A relative outcomes path is relative to the pool file, else to the working directory.
            beside = path.parent / entry.outcomes
            if beside.exists():
                pool._outcome_paths[entry.name.lower()] = beside
    return pool


def _describe_location(raw: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """'models[1] (Gemma-3-270M).price_in' reads better than ('models', 1, 'price_in')."""
    parts: list[str] = []
    node: Any = raw
    for key in loc:
        if isinstance(key, int):
            name = node[key].get("name") if isinstance(node, list) and isinstance(node[key], dict) else None
            parts[-1] += f"[{key}]" + (f" ({name})" if name else "")
        else:
            parts.append(str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "<root>"


class Pool:
    """The router and candidate models, their endpoints, and clients to call them."""

    def __init__(
        self,
        router: ModelEntry,
        models: Sequence[ModelEntry],
        source: Path | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.router = router
        self.models = list(models)
        self.source = source
        self._by_name = {m.name.lower(): m for m in self.models}
        self._endpoints: dict[str, str] = {}
        self._clients: dict[tuple[str, int, str, int], Any] = {}
        self.timeout_s = 60.0
        self.client_factory = client_factory
        self.cache: ResponseCache | None = None
        self.cache_mode: CacheMode = "off"
        self._outcome_paths: dict[str, Path] = {}

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

    def cost(self, name: str, input_tokens: int, output_tokens: int) -> float:
        return self.get(name).cost(input_tokens, output_tokens)

    def snapshot(self) -> dict[str, Any]:
        """Prices and descriptors in force now, for the trace store."""
        return {
            "source": str(self.source) if self.source else None,
            "router": self.router.model_dump(),
            "models": [m.model_dump() for m in self.models],
        }

    # -- endpoints --------------------------------------------------------------------------------------
    def bind_endpoint(self, name: str, base_url: str) -> None:
        """Record where a locally started model listens (base URL ending in /v1)."""
        self._endpoints[name.lower()] = base_url.rstrip("/")
        self._clients = {k: v for k, v in self._clients.items() if k[0] != name.lower()}

    def base_url(self, entry: ModelEntry) -> str:
        bound = self._endpoints.get(entry.name.lower())
        if bound:
            return bound
        if entry.base_url:
            return entry.base_url.rstrip("/")
        raise EndpointError(entry.name, f"no server is running for this {entry.backend} model")

    def with_router(self, router: ModelEntry) -> Pool:
        """The same pool with another router entry (e.g. a trained checkpoint)."""
        pool = Pool(router, self.models, self.source, self.client_factory)
        pool._endpoints = dict(self._endpoints)
        pool.timeout_s = self.timeout_s
        pool.cache, pool.cache_mode = self.cache, self.cache_mode
        pool._outcome_paths = dict(self._outcome_paths)
        return pool

    def outcomes_path(self, entry: ModelEntry) -> Path:
        """The outcome file of a ``backend: recorded`` entry (a relative path is beside the pool file)."""
        return self._outcome_paths.get(entry.name.lower()) or Path(str(entry.outcomes))

    # -- calls ------------------------------------------------------------------------------------------
    def _client(self, entry: ModelEntry, max_tokens: int, kind: str) -> Any:
        # Async HTTP clients belong to the event loop that made them: key the cache by loop too.
        key = (entry.name.lower(), max_tokens, kind, id(asyncio.get_running_loop()))
        client = self._clients.get(key)
        if client is None and self.client_factory is not None:
            client = self._clients[key] = self.client_factory(entry, kind, max_tokens)
        if client is None:
            from langchain_openai import ChatOpenAI, OpenAI

            common: dict[str, Any] = dict(
                base_url=self.base_url(entry),
                api_key=secret_from_env(entry.api_key_env) or "not-needed",
                model=entry.served_id,
                max_tokens=max_tokens,
                temperature=0.0,
                timeout=self.timeout_s,
                max_retries=0,
            )
            client = ChatOpenAI(**common, stream_usage=True) if kind == "chat" else OpenAI(**common)
            self._clients[key] = client
        return client

    async def ask(
        self, name: str, query: str, *, system: str | None = None, max_tokens: int = 512
    ) -> CallResult:
        """Send one question to a pool model in its declared mode (chat, or few-shot completion)."""
        entry = self.get(name)
        if entry.backend == "recorded":
            from app.recorded import replay  # app.recorded builds on this module's types

            return replay(entry, self.outcomes_path(entry), query)
        if entry.mode == "completion":
            return await self.complete(entry, _fill(entry, query), max_tokens=max_tokens)
        return await self.chat(entry, _ask_messages(query, system), max_tokens=max_tokens)

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
            kind, prompt = "chat", _normalise(_ask_messages(query, system))
        key, prompt_hash, params = _request_key(entry, kind, prompt, max_tokens, stop, None)
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

        return await self._call(entry, "chat", _normalise(messages), max_tokens, stops, extra_body, live)

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
        key, prompt_hash, params = _request_key(entry, kind, prompt, max_tokens, stop, extra_body)
        started = time.perf_counter()
        if self.cache is not None and self.cache_mode != "off":
            recorded = self.cache.get(key)
            if recorded is not None:
                return _result(entry, recorded, time.perf_counter() - started, cache="hit")
            if self.cache_mode == "only":
                raise EndpointError(entry.name, "replay cache only: no recorded response for this request")
        try:
            response = await live()
        except Exception as exc:  # any transport or API failure is the endpoint's
            raise EndpointError(entry.name, _reason(exc)) from exc
        latency = time.perf_counter() - started
        if self.cache is not None:
            self.cache.put(key, entry.name, prompt_hash, params, response)
        return _result(entry, response, latency, cache="miss" if self.cache is not None else None)

    async def render_chat(self, entry: ModelEntry, messages: Sequence[tuple[str, str]]) -> str:
        """The prompt text a self-hosted model sees for ``messages`` under its own chat template."""
        payload = [{"role": "user" if r == "human" else r, "content": c} for r, c in messages]
        if entry.backend == "llamacpp":
            root = self.base_url(entry).removesuffix("/v1")
            try:
                async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                    response = await http.post(f"{root}/apply-template", json={"messages": payload})
                    response.raise_for_status()
            except httpx.HTTPError as exc:
                raise EndpointError(entry.name, _reason(exc)) from exc
            return str(response.json()["prompt"])
        tokenizer = await asyncio.to_thread(_tokenizer, entry.hf_model or entry.served_id)
        return str(tokenizer.apply_chat_template(payload, tokenize=False, add_generation_prompt=True))

    async def health(self, entry: ModelEntry) -> bool:
        """Whether the entry's endpoint answers /models now."""
        try:
            async with httpx.AsyncClient(timeout=3.0) as http:
                headers = {}
                key = secret_from_env(entry.api_key_env)
                if key:
                    headers["Authorization"] = f"Bearer {key}"
                response = await http.get(f"{self.base_url(entry)}/models", headers=headers)
            return response.status_code == 200
        except (httpx.HTTPError, EndpointError):
            return False


def _fill(entry: ModelEntry, query: str) -> str:
    return (entry.prompt_template or "{query}").format(query=query)


def _ask_messages(query: str, system: str | None) -> list[tuple[str, str]]:
    return [*([("system", system)] if system else []), ("human", query)]


def _normalise(messages: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Chat requests that differ only in whitespace are the same request for the replay cache."""
    return [[role, " ".join(content.split())] for role, content in messages]


def _request_key(
    entry: ModelEntry,
    kind: str,
    prompt: Any,
    max_tokens: int,
    stop: list[str] | None,
    extra_body: dict[str, Any] | None,
) -> tuple[str, str, dict[str, Any]]:
    """(cache key, prompt hash, decoding params) of one request; temperature is always 0 here."""
    params = {"kind": kind, "max_tokens": max_tokens, "stop": stop, "extra_body": extra_body}
    prompt_hash = _sha256(prompt)
    return (
        _sha256({"model": entry.name, "served": entry.served_id, "prompt": prompt_hash, **params}),
        prompt_hash,
        params,
    )


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


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


def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def _reason(exc: BaseException) -> str:
    """A one-line, user-readable cause for a failed call."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "Timeout" in name or "timed out" in text.lower():
        return f"timed out ({name})"
    if "Connect" in name or "connection" in text.lower():
        return f"cannot connect ({name}: {text})" if text else f"cannot connect ({name})"
    return f"{name}: {text}" if text else name
