"""An OpenAI-compatible HTTP server over a RouteGraphService: `model` names a graph or a pool model.

Graph names (router-r1, ...) run the graph, one stored trace per request; a pool model's name is passed
straight through to that model (no trace). Concurrency: at most ``max_concurrency`` requests run at once,
up to ``max_queue`` more wait for a slot, and anything beyond that gets 429 at once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.ops import MeasureRequests, ServerMetrics, add_ops_routes
from app.service import GRAPHS, QuestionError, RouteGraphService, RunResult
from graphs.hops import Hop
from graphs.ports import CallResult, EndpointError


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    budget_usd: float | None = Field(default=None, gt=0, description="routegraph extra: spend limit.")
    max_turns: int | None = Field(default=None, ge=1, le=16, description="routegraph extra.")


class _Limiter:
    def __init__(self, running: int, queued: int) -> None:
        self._semaphore = asyncio.Semaphore(running)
        self._capacity = running + queued
        self._inside = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._inside >= self._capacity:
            raise ApiError(429, "too many concurrent requests; retry later", "rate_limit_error", "busy")
        self._inside += 1
        try:
            async with self._semaphore:
                yield
        finally:
            self._inside -= 1


def _error_response(status: int, message: str, type_: str, code: str | None = None, param: Any = None) -> Any:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _question(messages: list[ChatMessage]) -> str:
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise ApiError(400, "messages must include a user message", "invalid_request_error")
    last = users[-1]
    earlier = [f"{m.role}: {m.text}" for m in messages[:last] if m.text.strip()]
    question = messages[last].text
    return "Context:\n" + "\n".join(earlier) + f"\n\nQuestion: {question}" if earlier else question


def _hop_dict(hop: Hop) -> dict[str, Any]:
    return hop.model_dump(exclude={"detail", "router_text", "response"})


def _usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def create_app(
    service: RouteGraphService,
    api_key: str | None = None,
    max_body_bytes: int = 1_000_000,
    max_concurrency: int = 8,
    max_queue: int = 64,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """The app for ``service``; everything it uses hangs off these arguments (``metrics``: a fresh
    registry per app unless given)."""
    app = FastAPI(title="routegraph", docs_url=None, redoc_url=None)
    limiter = _Limiter(max_concurrency, max_queue)
    metrics = metrics or ServerMetrics()
    app.state.metrics = metrics
    app.add_middleware(MeasureRequests, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Any:
        metrics.errors.labels(exc.code or exc.type).inc()
        return _error_response(exc.status, exc.message, exc.type, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        metrics.errors.labels("invalid_request_error").inc()
        return _error_response(400, str(exc.errors()), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        metrics.errors.labels(kind).inc()
        return _error_response(exc.status_code, str(exc.detail), kind)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(401, "invalid or missing API key", "invalid_request_error", "invalid_api_key")

    async def read_body(request: Request) -> ChatRequest:
        declared = request.headers.get("content-length")
        too_large = f"request body over {max_body_bytes} bytes"
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise ApiError(413, too_large, "invalid_request_error", "body_too_large")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > max_body_bytes:
                raise ApiError(413, too_large, "invalid_request_error", "body_too_large")
        try:
            return ChatRequest.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise ApiError(400, f"malformed request body: {exc}", "invalid_request_error") from None

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        check_key(request)
        data = [{"id": g, "object": "model", "created": 0, "owned_by": "routegraph"} for g in GRAPHS]
        data += [{"id": m.name, "object": "model", "created": 0, "owned_by": "pool"} for m in service.models]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        check_key(request)
        body = await read_body(request)
        if body.model not in GRAPHS and service.find_model(body.model) is None:
            raise ApiError(
                404, f"The model {body.model!r} does not exist", "invalid_request_error", "model_not_found"
            )
        request.state.metrics_model = body.model  # a known name: metric labels stay bounded
        question = _question(body.messages)
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            return StreamingResponse(_sse(ident, body, question), media_type="text/event-stream")
        async with limiter.slot():
            if body.model in GRAPHS:
                result = await _run_graph(body, question)
                if result.status == "failed":
                    raise ApiError(
                        502, f"run {result.run_id} failed: {result.error}", "server_error", "run_failed"
                    )
                completion = _completion(
                    ident, body.model, result.answer, result.input_tokens, result.output_tokens
                )
                completion["routegraph"] = _summary(result)
                headers = {
                    "x-routegraph-run-id": str(result.run_id),
                    "x-routegraph-cost": f"{result.total_cost:.10f}",
                }
            else:
                call = await _pass_through(body)
                completion = _completion(ident, body.model, call.text, call.input_tokens, call.output_tokens)
                completion["routegraph"] = _call_summary(call)
                headers = {"x-routegraph-cost": f"{call.cost:.10f}"}
        return JSONResponse(completion, headers=headers)

    async def _run_graph(body: ChatRequest, question: str, on_hop: Any = None) -> RunResult:
        try:
            async for item in service.astream(
                question, graph=body.model, budget_usd=body.budget_usd, max_turns=body.max_turns
            ):
                if isinstance(item, RunResult):
                    metrics.observe_run(item)
                    return item
                metrics.observe_hop(item)
                if on_hop is not None:
                    await on_hop(item)
        except QuestionError as exc:
            raise ApiError(400, str(exc), "invalid_request_error") from None
        raise AssertionError("astream always ends with a RunResult")

    async def _pass_through(body: ChatRequest) -> CallResult:
        role = {"user": "human", "assistant": "ai", "developer": "system"}
        messages = [(role.get(m.role, m.role), m.text) for m in body.messages]
        try:
            call = await service.call_model(
                body.model, messages, max_tokens=body.max_completion_tokens or body.max_tokens
            )
            metrics.observe_call(call)
            return call
        except EndpointError as exc:
            raise ApiError(502, str(exc), "server_error", "upstream_failed") from None

    async def _sse(ident: str, body: ChatRequest, question: str) -> AsyncIterator[str]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.model,
                "choices": [choice],
                **extra,
            }

        async def on_hop(hop: Hop) -> None:
            await queue.put(chunk({}, routegraph={"hop": _hop_dict(hop)}))

        try:
            yield _event(chunk({"role": "assistant", "content": ""}))
            async with limiter.slot():
                if body.model in GRAPHS:
                    task = asyncio.ensure_future(_run_graph(body, question, on_hop))
                    try:
                        while not task.done() or not queue.empty():
                            getter = asyncio.ensure_future(queue.get())
                            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                            if not getter.done():
                                getter.cancel()
                                continue
                            yield _event(getter.result())
                    finally:  # the client went away: stop the run (the service marks it cancelled)
                        task.cancel()
                    result = task.result()
                    if result.status == "failed":
                        raise ApiError(
                            502, f"run {result.run_id} failed: {result.error}", "server_error", "run_failed"
                        )
                    answer, tokens = result.answer, (result.input_tokens, result.output_tokens)
                    summary = _summary(result)
                else:
                    call = await _pass_through(body)
                    answer, tokens, summary = (
                        call.text,
                        (call.input_tokens, call.output_tokens),
                        _call_summary(call),
                    )
            yield _event(chunk({"content": answer}))
            yield _event(chunk({}, "stop", routegraph=summary))
            if (body.stream_options or {}).get("include_usage"):
                usage_chunk = chunk({}) | {"choices": [], "usage": _usage(*tokens)}
                yield _event(usage_chunk)
        except ApiError as exc:
            metrics.errors.labels(exc.code or exc.type).inc()
            yield _event(
                {"error": {"message": exc.message, "type": exc.type, "param": None, "code": exc.code}}
            )
        yield "data: [DONE]\n\n"

    add_ops_routes(app, service, metrics, check_key)
    return app


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _completion(ident: str, model: str, text: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": _usage(tokens_in, tokens_out),
    }


def _summary(result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "status": result.status,
        "total_cost": result.total_cost,
        "error": result.error,
        "hops": [_hop_dict(h) for h in result.hops],
    }


def _call_summary(call: CallResult) -> dict[str, Any]:
    hop = {
        "node": "pass-through",
        "model": call.model,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cost": call.cost,
        "latency_s": call.latency_s,
    }
    return {"run_id": None, "status": "ok", "total_cost": call.cost, "error": None, "hops": [hop]}
