"""Prometheus metrics of the API: requests, latency, MongoDB reachability.

Each app gets its own registry, so several apps in one process (tests) never
collide on metric names, and ``/metrics`` shows only this API's series. Route
labels are the route templates (``/api/cameras/{camera_id}/frames``), never
raw paths, so a scan of random URLs cannot blow up the label set.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: request latency buckets in seconds (loopback answers in ms; FerretDB scans can take a second)
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """The API's metric families in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ipsp_api_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ipsp_api_request_duration_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.mongo_up = Gauge(
            "ipsp_api_mongo_up",
            "1 when the last MongoDB check (healthz) succeeded, else 0.",
            registry=self.registry,
        )

    def render(self) -> Response:
        """The registry in Prometheus text exposition format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Count and time every HTTP request under its route template.

    A plain ASGI middleware, not ``BaseHTTPMiddleware``: that one runs each request
    in a task group with memory streams, which cost more than a cached answer itself.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_template(scope)
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (routing records it in the scope), or ``unmatched``."""
    route = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")
