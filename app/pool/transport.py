"""How a request reaches an entry's OpenAI-compatible endpoint: LangChain clients, the request-body
extras that carry a decoding constraint to llama.cpp or vLLM, chat-template rendering on self-hosted
servers, and one-line reasons for failed calls. The only module that knows transports apart."""

from __future__ import annotations

from typing import Any

import httpx

from app.config import secret_from_env
from app.pool.entries import ModelEntry
from graphs.ports import Constraint, EndpointError, Grammar, JsonSchema


def make_client(entry: ModelEntry, base_url: str, kind: str, max_tokens: int, timeout_s: float) -> Any:
    """A LangChain chat model (``kind`` 'chat') or completion LLM ('completion') for one entry."""
    from langchain_openai import ChatOpenAI, OpenAI

    common: dict[str, Any] = dict(
        base_url=base_url,
        api_key=secret_from_env(entry.api_key_env) or "not-needed",
        model=entry.served_id,
        max_tokens=max_tokens,
        temperature=0.0,
        timeout=timeout_s,
        max_retries=0,
    )
    return ChatOpenAI(**common, stream_usage=True) if kind == "chat" else OpenAI(**common)


def constraint_body(entry: ModelEntry, constraint: Constraint | None) -> dict[str, Any] | None:
    """The request-body extra that makes a self-hosted server enforce ``constraint``; hosted APIs get none."""
    if constraint is None:
        return None
    if entry.backend == "llamacpp":
        if isinstance(constraint, JsonSchema):
            return {"json_schema": constraint.schema}
        return {"grammar": constraint.gbnf}
    if entry.backend == "vllm":
        if isinstance(constraint, Grammar):
            return {"structured_outputs": {"grammar": constraint.gbnf}}
        return {"structured_outputs": {"json": constraint.schema}}
    return None


async def render_chat(
    entry: ModelEntry, base_url: str, messages: list[dict[str, str]], timeout_s: float
) -> str:
    """The prompt text a self-hosted model sees for ``messages`` under its own chat template."""
    if entry.backend == "llamacpp":
        root = base_url.removesuffix("/v1")
        try:
            async with httpx.AsyncClient(timeout=timeout_s) as http:
                response = await http.post(f"{root}/apply-template", json={"messages": messages})
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise EndpointError(entry.name, reason(exc)) from exc
        return str(response.json()["prompt"])
    import asyncio

    tokenizer = await asyncio.to_thread(_tokenizer, entry.hf_model or entry.served_id)
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


async def models_endpoint_ok(entry: ModelEntry, base_url: str) -> bool:
    """Whether the endpoint answers ``/models`` now."""
    try:
        async with httpx.AsyncClient(timeout=3.0) as http:
            headers = {}
            key = secret_from_env(entry.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            response = await http.get(f"{base_url}/models", headers=headers)
        return response.status_code == 200
    except httpx.HTTPError:
        return False


def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def reason(exc: BaseException) -> str:
    """A one-line, user-readable cause for a failed call."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "Timeout" in name or "timed out" in text.lower():
        return f"timed out ({name})"
    if "Connect" in name or "connection" in text.lower():
        return f"cannot connect ({name}: {text})" if text else f"cannot connect ({name})"
    return f"{name}: {text}" if text else name
