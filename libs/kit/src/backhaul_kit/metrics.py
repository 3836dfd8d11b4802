"""Prometheus metrics every service exposes at /metrics.

One process-wide registry; every series carries the service's name so a process that hosts
several services (tests) keeps them apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from fastapi import Request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import Response

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


class RequestMetricsMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: object, service: str) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.service = service

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            if template not in ("/metrics", "/healthz", "/readyz"):
                HTTP_REQUESTS.labels(self.service, request.method, template, str(status)).inc()
                HTTP_LATENCY.labels(self.service, request.method, template).observe(
                    time.perf_counter() - started
                )


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
