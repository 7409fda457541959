"""OpenAI's response shapes for routegraph's results: a completion, a stream's chunks and events, and the
``routegraph`` extra (run id, cost, hops) that both carry."""

from __future__ import annotations

import json
import time
from typing import Any

from app.service import RunResult
from graphs.hops import Hop
from graphs.ports import CallResult


def hop_dict(hop: Hop) -> dict[str, Any]:
    return hop.model_dump(exclude={"detail", "router_text", "response"})


def usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def event(payload: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(payload)}\n\n"


def completion(ident: str, model: str, text: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage(tokens_in, tokens_out),
    }


def chunk(
    ident: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        **extra,
    }


def run_summary(result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "status": result.status,
        "total_cost": result.total_cost,
        "error": result.error,
        "hops": [hop_dict(h) for h in result.hops],
    }


def call_summary(call: CallResult) -> dict[str, Any]:
    hop = {
        "node": "pass-through",
        "model": call.model,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cost": call.cost,
        "latency_s": call.latency_s,
    }
    return {"run_id": None, "status": "ok", "total_cost": call.cost, "error": None, "hops": [hop]}
