"""Prometheus metrics every service exposes at /metrics.

One process-wide registry; every series carries the service's name so a process that hosts
several services (tests) keeps them apart.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backhaul_kit.db import Database
from backhaul_kit.messaging.tables import outbox_messages

log = structlog.get_logger(__name__)

HTTP_REQUESTS = Counter(
    "backhaul_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "backhaul_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_HANDLED = Counter(
    "backhaul_events_total",
    "Events a consumer group took, by outcome (handled, duplicate, ignored, dead_lettered)",
    ["service", "event_type", "outcome"],
)
EVENT_FAILURES = Counter(
    "backhaul_event_failures_total",
    "Failed attempts at handling an event",
    ["service", "event_type"],
)
EVENT_LATENCY = Histogram(
    "backhaul_event_handling_seconds",
    "Time to handle one event, its transaction included",
    ["service", "event_type"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
CONSUMER_BATCH_SIZE = Histogram(
    "backhaul_consumer_batch_size",
    "Events a consumer handled together in one transaction and one offset commit",
    ["service"],
    buckets=(2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
DEAD_LETTERS = Counter(
    "backhaul_dead_letters_total", "Messages put on a dead-letter topic", ["service", "topic"]
)
OUTBOX_PUBLISHED = Counter(
    "backhaul_outbox_published_total", "Events the relay published", ["service"]
)
OUTBOX_BACKLOG = Gauge("backhaul_outbox_backlog", "Committed events not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "backhaul_outbox_oldest_age_seconds", "Age of the oldest unpublished event", ["service"]
)
SCHEDULER_FIRING_LAG = Histogram(
    "backhaul_scheduler_firing_lag_seconds",
    "Time from a scheduled event's run time to its command being staged",
    ["service"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge(
    "backhaul_consumer_lag",
    "Messages behind the end of each partition",
    ["service", "topic", "partition"],
)


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


_UNMEASURED = ("/metrics", "/healthz", "/readyz")


class RequestMetricsMiddleware:
    """Counts requests and observes their latency by method, route template and status.

    Plain ASGI (not BaseHTTPMiddleware, which costs a Request and a task group per request);
    the status is read from the response's start message, 500 if none was sent."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        # The labelled series, by (method, route, status): labels() takes a lock and builds
        # a key on every call, and a service has a few dozen of these at most.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _observe(self, method: str, template: str, status: int, seconds: float) -> None:
        key = (method, template, status)
        series = self._series.get(key)
        if series is None:
            series = (
                HTTP_REQUESTS.labels(self.service, method, template, str(status)),
                HTTP_LATENCY.labels(self.service, method, template),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)

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
            # The router writes the matched route into this same scope.
            template = getattr(scope.get("route"), "path", "unmatched")
            if template not in _UNMEASURED:
                self._observe(scope["method"], template, status, time.perf_counter() - started)


async def watch_outbox(service: str, db: Database, interval: float = 5.0) -> None:
    """Keep the outbox backlog gauges current (the worker role runs this)."""
    while True:
        try:
            async with db.sessions() as session:
                count, oldest = (
                    await session.execute(
                        select(func.count(), func.min(outbox_messages.c.created_at)).where(
                            outbox_messages.c.published_at.is_(None)
                        )
                    )
                ).one()
            OUTBOX_BACKLOG.labels(service).set(count or 0)
            if oldest is not None:
                age = time.time() - oldest.timestamp()
                OUTBOX_OLDEST_AGE.labels(service).set(max(age, 0.0))
            else:
                OUTBOX_OLDEST_AGE.labels(service).set(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("outbox_watch_failed", error=repr(exc))
        await asyncio.sleep(interval)
