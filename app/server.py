"""An OpenAI-compatible HTTP server over a RouteGraphService: `model` names a graph or a pool model.

Graph names (router-r1, ...) run the graph, one stored trace per request; a pool model's name is passed
straight through to that model (no trace). Concurrency: at most ``max_concurrency`` requests run at once,
up to ``max_queue`` more wait for a slot, and anything beyond that gets 429 at once (:mod:`app.api.limits`).

Everything that can be known before a model is called is answered before a stream's headers go out: a
malformed request or one too long for the model's context window (400), a model that is down (503, with
``Retry-After``), a full queue (429). Only what happens during a run reaches a stream as an error event.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from app.api import shapes
from app.api.errors import ApiError, invalid
from app.api.limits import Limiter, Release
from app.api.schema import ChatRequest, parse_request, passthrough_messages, question_of
from app.ops import MeasureRequests, ServerMetrics, add_ops_routes
from app.service import (
    GRAPHS,
    ContextLengthError,
    ModelDownError,
    QuestionError,
    RouteGraphService,
    RunResult,
)
from graphs.hops import Hop
from graphs.ports import CallResult, EndpointError

log = logging.getLogger(__name__)


class _HeldStream(StreamingResponse):
    """A stream that holds its limiter slot until the last byte is sent or the client goes away."""

    def __init__(self, content: AsyncIterator[str], release: Release) -> None:
        super().__init__(content, media_type="text/event-stream")
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _model_down(exc: ModelDownError) -> ApiError:
    return ApiError(503, exc.message, "server_error", "model_down", retry_after_s=exc.retry_after_s)


def _internal() -> ApiError:
    # Never the exception's text: it may hold paths, prompts or a traceback's worth of internals.
    return ApiError(500, "internal server error (see the server's log)", "server_error", "internal")


def create_app(
    service: RouteGraphService,
    api_key: str | None = None,
    max_body_bytes: int = 1_000_000,
    max_concurrency: int = 4,
    max_queue: int = 64,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """The app for ``service``; everything it uses hangs off these arguments (``metrics``: a fresh
    registry per app unless given)."""
    app = FastAPI(title="routegraph", docs_url=None, redoc_url=None)
    limiter = Limiter(max_concurrency, max_queue)
    metrics = metrics or ServerMetrics()
    app.state.metrics = metrics
    app.add_middleware(MeasureRequests, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Any:
        metrics.errors.labels(exc.code or exc.type).inc()
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        metrics.errors.labels("invalid_request_error").inc()
        return invalid(str(exc.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        metrics.errors.labels(kind).inc()
        return ApiError(exc.status_code, str(exc.detail), kind).response()

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Any:
        log.error("unhandled error answering %s", request.url.path, exc_info=exc)
        return _internal().response()  # MeasureRequests counts it as 'internal'

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
        return parse_request(bytes(raw))

    def refuse_if_down(model: str) -> None:
        down = service.outage(model)
        if down is not None:
            raise _model_down(down)

    def admit(body: ChatRequest, question: str) -> None:
        """Every refusal that needs no model call: the client's (400) first, then a model down (503)."""
        try:
            if body.model in GRAPHS:
                service.check_question(question, body.model, body.budget_usd, body.max_turns)
            else:
                cap = body.max_completion_tokens or body.max_tokens
                service.check_call(body.model, passthrough_messages(body.messages), max_tokens=cap)
        except ContextLengthError as exc:
            raise invalid(str(exc), "messages", "context_length_exceeded") from None
        except QuestionError as exc:
            raise invalid(str(exc)) from None
        refuse_if_down(body.model)

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        check_key(request)
        names = [(g, "routegraph") for g in GRAPHS] + [(m.name, "pool") for m in service.models]
        data = []
        for name, owner in names:
            down = service.outage(name)
            status = {"status": "available"} if down is None else {"status": "down", "detail": down.message}
            data.append({"id": name, "object": "model", "created": 0, "owned_by": owner, **status})
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
        question = question_of(body.messages)
        admit(body, question)
        release = await limiter.acquire()
        try:
            refuse_if_down(body.model)  # it may have gone down while this request waited
        except ApiError:
            release()
            raise
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            return _HeldStream(_sse(ident, body, question), release)
        try:
            if body.model in GRAPHS:
                result = await _run_graph(body, question)
                if result.status == "failed":
                    raise run_failure(body, result)
                completion = shapes.completion(
                    ident, body.model, result.answer, result.input_tokens, result.output_tokens
                )
                completion["routegraph"] = shapes.run_summary(result)
                headers = {
                    "x-routegraph-run-id": str(result.run_id),
                    "x-routegraph-cost": f"{result.total_cost:.10f}",
                }
            else:
                call = await _pass_through(body)
                completion = shapes.completion(
                    ident, body.model, call.text, call.input_tokens, call.output_tokens
                )
                completion["routegraph"] = shapes.call_summary(call)
                headers = {"x-routegraph-cost": f"{call.cost:.10f}"}
        finally:
            release()
        return JSONResponse(completion, headers=headers)

    def run_failure(body: ChatRequest, result: RunResult) -> ApiError:
        """A failed run's error: 503 when it failed because a model it needs is down now, else 502."""
        down = service.outage(body.model)
        if down is not None:
            return _model_down(down)
        return ApiError(502, f"run {result.run_id} failed: {result.error}", "server_error", "run_failed")

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
            raise invalid(str(exc)) from None
        raise AssertionError("astream always ends with a RunResult")

    async def _pass_through(body: ChatRequest) -> CallResult:
        try:
            call = await service.call_model(
                body.model,
                passthrough_messages(body.messages),
                max_tokens=body.max_completion_tokens or body.max_tokens,
            )
        except ModelDownError as exc:
            raise _model_down(exc) from None
        except ContextLengthError as exc:
            raise invalid(str(exc), "messages", "context_length_exceeded") from None
        except EndpointError as exc:
            raise ApiError(502, str(exc), "server_error", "upstream_failed") from None
        metrics.observe_call(call)
        return call

    async def _sse(ident: str, body: ChatRequest, question: str) -> AsyncIterator[str]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def on_hop(hop: Hop) -> None:
            await queue.put(shapes.chunk(ident, body.model, {}, routegraph={"hop": shapes.hop_dict(hop)}))

        try:
            yield shapes.event(shapes.chunk(ident, body.model, {"role": "assistant", "content": ""}))
            if body.model in GRAPHS:
                task = asyncio.ensure_future(_run_graph(body, question, on_hop))
                try:
                    while not task.done() or not queue.empty():
                        getter = asyncio.ensure_future(queue.get())
                        await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                        if not getter.done():
                            getter.cancel()
                            continue
                        yield shapes.event(getter.result())
                finally:  # the client went away: stop the run (the service marks it cancelled)
                    task.cancel()
                result = task.result()
                if result.status == "failed":
                    raise run_failure(body, result)
                answer, tokens = result.answer, (result.input_tokens, result.output_tokens)
                summary = shapes.run_summary(result)
            else:
                call = await _pass_through(body)
                answer, tokens = call.text, (call.input_tokens, call.output_tokens)
                summary = shapes.call_summary(call)
            yield shapes.event(shapes.chunk(ident, body.model, {"content": answer}))
            yield shapes.event(shapes.chunk(ident, body.model, {}, "stop", routegraph=summary))
            if (body.stream_options or {}).get("include_usage"):
                usage = shapes.chunk(ident, body.model, {}) | {"choices": [], "usage": shapes.usage(*tokens)}
                yield shapes.event(usage)
        except ApiError as exc:  # the status line has gone out: the error travels as an event
            metrics.errors.labels(exc.code or exc.type).inc()
            yield shapes.event(exc.body())
        except Exception:
            log.exception("unhandled error in a stream")
            metrics.errors.labels("internal").inc()
            yield shapes.event(_internal().body())
        yield "data: [DONE]\n\n"

    add_ops_routes(app, service, metrics, check_key)
    return app
