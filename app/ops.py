"""Operations endpoints of the HTTP server: ``/health``, ``/ready`` and Prometheus ``/metrics``.

Each app gets its own :class:`ServerMetrics` (its own ``CollectorRegistry``), so several apps in one
process, and the tests, never share counters. Label values are bounded: routes are the server's own
paths, models are graph or pool names the server has accepted (anything else is ``unknown``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.service import RouteGraphService, RunResult
from graphs.hops import Hop
from graphs.ports import CallResult

ROUTES = ("/v1/chat/completions", "/v1/models", "/health", "/ready", "/metrics")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds: a pass-through call on a local model takes tenths, a graph run on an API pool tens."""


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "routegraph_http_requests", "HTTP requests answered.", ["route", "model", "status"], registry=r
        )
        self.latency = Histogram(
            "routegraph_http_request_duration_seconds",
            "Time from request to the last byte of the response (a stream's end for SSE).",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.runs = Counter("routegraph_runs", "Graph runs finished.", ["graph", "status"], registry=r)
        self.hops = Counter(
            "routegraph_hops",
            "Model calls made (graph hops and pass-through calls).",
            ["model", "node"],
            registry=r,
        )
        self.tokens = Counter(
            "routegraph_tokens", "Tokens sent to and produced by pool models.", ["model", "kind"], registry=r
        )
        self.cost = Counter("routegraph_cost_usd", "USD spent at the pool's prices.", ["model"], registry=r)
        self.errors = Counter(
            "routegraph_errors",
            "Errors by kind: an API error's code or type (e.g. 'run_failed', 'busy', 'model_not_found'), "
            "'hop_failed' (a model call inside a run that failed or was refused), 'internal' (unhandled).",
            ["kind"],
            registry=r,
        )

    def observe_hop(self, hop: Hop) -> None:
        model = hop.model or "none"
        self.hops.labels(model, hop.node).inc()
        self.tokens.labels(model, "input").inc(hop.input_tokens)
        self.tokens.labels(model, "output").inc(hop.output_tokens)
        self.cost.labels(model).inc(hop.cost)
        if hop.error:
            self.errors.labels("hop_failed").inc()

    def observe_run(self, result: RunResult) -> None:
        # A failed run is counted as an error once, by the API error ('run_failed') it is answered with.
        self.runs.labels(result.graph, result.status).inc()

    def observe_call(self, call: CallResult) -> None:
        self.observe_hop(
            Hop(
                node="pass-through",
                model=call.model,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                cost=call.cost,
                latency_s=call.latency_s,
            )
        )

    def observe_hops(self, hops: Iterable[Hop]) -> None:
        for hop in hops:
            self.observe_hop(hop)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MeasureRequests:
    """ASGI middleware: counts each HTTP request and times it to the response's last byte.

    Handlers name the model they served in ``request.state.metrics_model``; the status is the one sent.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        state = scope.setdefault("state", {})

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            self.metrics.errors.labels("internal").inc()
            raise
        finally:
            path = scope.get("path", "")
            route = path if path in ROUTES else "other"
            model = str(state.get("metrics_model", ""))
            self.metrics.requests.labels(route, model, str(status)).inc()
            self.metrics.latency.labels(route, model).observe(time.perf_counter() - started)


def add_ops_routes(
    app: FastAPI,
    service: RouteGraphService,
    metrics: ServerMetrics,
    check_key: Callable[[Request], None],
) -> None:
    """``/health`` and ``/ready`` answer anyone (load balancers, orchestrators); ``/metrics`` needs the API
    key when the server has one (Prometheus sends it as ``authorization: credentials``)."""

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Any:
        readiness = await service.areadiness()
        body = readiness.to_dict()
        return JSONResponse(body, status_code=200 if readiness.ready else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Any:
        check_key(request)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
