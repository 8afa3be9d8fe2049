"""Prometheus metrics of the API process (one registry per app, exposed on /metrics)."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("metalic.service")


class Metrics:
    """The API's metrics; ``registry`` is what ``/metrics`` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("metalic_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("metalic_http_request_seconds", "HTTP request latency by route",
                                 ["method", "route"], registry=self.registry)
        self.jobs_submitted = Counter("metalic_jobs_submitted_total", "Encode jobs enqueued", registry=self.registry)
        self.decodes = Counter("metalic_decodes_total", "Decodes by outcome", ["outcome"], registry=self.registry)
        self.decode_seconds = Histogram("metalic_decode_seconds", "Time of one decode", registry=self.registry)
        self.decodes_in_flight = Gauge("metalic_decodes_in_flight", "Decodes running or waiting",
                                       registry=self.registry)

    def add_queue_collector(self, jobs) -> None:
        """Queue depth and live workers, read from Redis at scrape time."""

        class _QueueCollector:
            def collect(self_inner):
                depth = GaugeMetricFamily("metalic_queue_depth", "Encode jobs waiting in the queue")
                workers = GaugeMetricFamily("metalic_workers", "Registered workers on the queue")
                try:
                    depth.add_metric([], jobs.queue_depth())
                    workers.add_metric([], jobs.worker_count())
                except Exception as exc:  # a scrape must not fail because Redis is away
                    log.warning("metrics: redis unavailable: %s", exc)
                    return
                yield depth
                yield workers

        self.registry.register(_QueueCollector())


class MetricsMiddleware:
    """Count and time every request by its route template (not its raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - started)
