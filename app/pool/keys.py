"""The replay cache's side of a request: what identifies it (model, prompt hash, decoding parameters) and
the store interface it is recorded in and replayed from (the trace store's ``model_responses``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal, Protocol

CacheMode = Literal["off", "prefer", "only"]


class ResponseCache(Protocol):
    """Where model answers are recorded and replayed from."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(
        self, key: str, model: str, prompt_hash: str, params: dict[str, Any], response: dict[str, Any]
    ) -> None: ...


def normalise(messages: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Chat requests that differ only in spacing inside lines (runs of spaces, spaces at either end, blank
    lines) are the same request for the replay cache. Line breaks count: Qwen2.5-1.5B answered 5 of 16
    CommonsenseQA items differently when the choices stood on one line instead of one per line."""
    return [
        [role, "\n".join(" ".join(ln.split()) for ln in content.splitlines() if ln.strip())]
        for role, content in messages
    ]


def request_key(
    name: str,
    served_id: str,
    kind: str,
    prompt: Any,
    max_tokens: int,
    stop: list[str] | None,
    extra_body: dict[str, Any] | None,
) -> tuple[str, str, dict[str, Any]]:
    """(cache key, prompt hash, decoding params) of one request; temperature is always 0 here."""
    params = {"kind": kind, "max_tokens": max_tokens, "stop": stop, "extra_body": extra_body}
    prompt_hash = sha256(prompt)
    return (
        sha256({"model": name, "served": served_id, "prompt": prompt_hash, **params}),
        prompt_hash,
        params,
    )


def sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
