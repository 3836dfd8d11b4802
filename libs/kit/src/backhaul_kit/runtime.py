"""The composition root's frame: one object that builds and runs a service by role.

A service's `bootstrap.py` creates a `ServiceRuntime`, registers its routers, event
handlers and timers, and hands it to `cli`. The same runtime runs as `all` (development:
API, consumers and relay in one process), `api` or `worker` (Kubernetes).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI
from faststream.kafka import KafkaBroker
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from backhaul_contracts.topics import ALL_TOPICS
from backhaul_kit import migrations
from backhaul_kit.auth import TokenVerifier, authorize
from backhaul_kit.config import Role, ServiceSettings
from backhaul_kit.db import Database
from backhaul_kit.http import (
    ERROR_RESPONSES,
    BodySizeLimitMiddleware,
    CorrelationMiddleware,
    HeaderSizeLimitMiddleware,
    health_router,
    install_error_handlers,
    server_head_limit,
)
from backhaul_kit.kafka import (
    KafkaProbe,
    create_broker,
    create_producer,
    ensure_topics,
    watch_consumer_lag,
)
from backhaul_kit.logging import configure_logging
from backhaul_kit.messaging.consumer import EventConsumer
from backhaul_kit.messaging.outbox import Outbox
from backhaul_kit.messaging.relay import OutboxRelay
from backhaul_kit.metrics import RequestMetricsMiddleware, watch_outbox
from backhaul_kit.telemetry import setup_tracing, shutdown_tracing
from backhaul_kit.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

BackgroundTask = Callable[["ServiceRuntime"], Coroutine[Any, Any, None]]


class ServiceRuntime:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        title: str,
        description: str,
        migrations_dir: Path,
    ) -> None:
        self.settings = settings
        self.title = title
        self.description = description
        self.migrations_dir = migrations_dir
        self.db = Database(settings.resolved_database_url, pool_size=settings.database_pool_size)
        self.outbox = Outbox(settings.service_name, topic_prefix=settings.kafka_topic_prefix)
        self.consumer = EventConsumer(
            self.db,
            self.outbox,
            group=settings.consumer_group,
            max_attempts=settings.consumer_max_attempts,
            retry_backoff=settings.consumer_retry_backoff_seconds,
            topic_prefix=settings.kafka_topic_prefix,
            service=settings.service_name,
            batch_size=settings.consumer_batch_size,
            batch_wait_ms=settings.consumer_batch_wait_ms,
            fetch_bytes_per_partition=settings.consumer_fetch_bytes_per_partition,
        )
        self.kafka_probe = KafkaProbe(settings)
        self.token_verifier = TokenVerifier(settings)
        self.routers: list[APIRouter] = []
        self.background: list[BackgroundTask] = []
        self.producer: AIOKafkaProducer | None = None
        self.broker: KafkaBroker | None = None
        self.relay: OutboxRelay | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- composition ---------------------------------------------------------------------

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, self.outbox)

    def include_router(self, router: APIRouter) -> None:
        self.routers.append(router)

    def add_background(self, task: BackgroundTask) -> None:
        """A long-running coroutine of the worker role (a timer, a poller)."""
        self.background.append(task)

    # -- HTTP ----------------------------------------------------------------------------

    def create_app(self, role: Role | None = None) -> FastAPI:
        role = role or self.settings.role
        app = FastAPI(
            title=self.title,
            description=self.description,
            version="0.1.0",
            lifespan=lambda _app: self._lifespan(role),
        )
        app.state.runtime = self
        install_error_handlers(app)
        app.add_middleware(BodySizeLimitMiddleware, max_bytes=self.settings.max_request_body_bytes)
        app.add_middleware(
            HeaderSizeLimitMiddleware, max_bytes=self.settings.max_request_header_bytes
        )
        app.add_middleware(CorrelationMiddleware)
        app.add_middleware(RequestMetricsMiddleware, service=self.settings.service_name)
        app.include_router(health_router(self))
        if role in (Role.ALL, Role.API):
            for router in self.routers:
                app.include_router(
                    router, dependencies=[Depends(authorize)], responses=ERROR_RESPONSES
                )
        provider = setup_tracing(
            self.settings.service_name, self.settings.otel_exporter_otlp_endpoint
        )
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=provider,
            excluded_urls="healthz,readyz,metrics",
            # One server span per request, not one more per ASGI message sent and received:
            # those were a quarter of the accounts API's CPU in a disconnect storm.
            exclude_spans=["receive", "send"],
        )
        return app

    @asynccontextmanager
    async def _lifespan(self, role: Role) -> AsyncIterator[None]:
        # The API role's relay is another process's: on PostgreSQL its commits NOTIFY it.
        self.outbox.notify_other_processes = role is Role.API and not self.db.is_sqlite
        if role in (Role.ALL, Role.WORKER):
            await self.start_worker()
        try:
            yield
        finally:
            await self.stop()

    # -- worker --------------------------------------------------------------------------

    async def start_worker(self) -> None:
        """Start the relay, the consumers and the timers."""
        settings = self.settings
        if settings.kafka_create_topics:
            await _retry(
                lambda: ensure_topics(settings, list(ALL_TOPICS), [settings.consumer_group]),
                what="kafka_topics",
            )
        self.producer = create_producer(settings)
        await _retry(self.producer.start, what="kafka_producer")
        self.consumer.dead_letters = self.producer
        setup_tracing(settings.service_name, settings.otel_exporter_otlp_endpoint)
        self.broker = create_broker(settings)
        self.consumer.subscribe(self.broker)
        await _retry(self.broker.start, what="kafka_consumer")
        self.relay = OutboxRelay(
            self.db,
            self.outbox,
            self.producer,
            batch_size=settings.outbox_batch_size,
            poll_interval=settings.outbox_poll_interval_seconds,
            idle_poll=settings.outbox_idle_poll_seconds,
            lock_name=f"{settings.service_name}-outbox",
        )
        self._tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        name = settings.service_name
        self._tasks.append(asyncio.create_task(watch_outbox(name, self.db), name="outbox-watch"))
        if self.consumer.topics:
            self._tasks.append(
                asyncio.create_task(
                    watch_consumer_lag(
                        settings,
                        self.consumer.topics,
                        f"{settings.kafka_topic_prefix}{settings.consumer_group}",
                    ),
                    name="lag-watch",
                )
            )
        for task in self.background:
            self._tasks.append(
                asyncio.create_task(task(self), name=getattr(task, "__name__", "bg"))
            )
        log.info("worker_started", topics=self.consumer.topics)

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop the worker and release connections; every wait is bounded, so a stuck
        client can delay shutdown but never hang it."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=timeout)
            for task in stuck:
                log.warning("background_task_did_not_stop", task=task.get_name())
        self._tasks.clear()
        closers: list[Callable[[], Awaitable[object]]] = []
        if self.broker is not None:
            closers.append(self.broker.stop)
            self.broker = None
        if self.producer is not None:
            closers.append(self.producer.stop)
            self.producer = None
        closers += [self.kafka_probe.close, self.db.dispose]
        for close in closers:
            try:
                await asyncio.wait_for(close(), timeout)
            except Exception as exc:
                log.warning(
                    "shutdown_step_failed",
                    step=getattr(close, "__qualname__", "?"),
                    error=repr(exc),
                )

    # -- process -------------------------------------------------------------------------

    def migrate(self) -> None:
        migrations.upgrade(self.migrations_dir, self.settings.resolved_database_url)

    def serve(self, role: Role | None = None, port: int | None = None) -> None:
        settings = self.settings
        configure_logging(settings.service_name, level=settings.log_level, json=settings.log_json)
        if settings.auto_migrate:
            self.migrate()
        app = self.create_app(role)
        try:
            uvicorn.run(
                app,
                host=settings.http_host,
                port=port or settings.http_port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=10,
                # h11, not httptools: only h11 caps what a request's head may buffer (the
                # header-size limit depends on it), and the parser is not where time goes.
                http="h11",
                h11_max_incomplete_event_size=server_head_limit(settings.max_request_header_bytes),
            )
        finally:
            shutdown_tracing()


async def _retry(
    start: Callable[[], Awaitable[object]], *, what: str, attempts: int = 30, delay: float = 1.0
) -> None:
    """Kafka may come up after us (Kubernetes, `make run`): wait for it a bounded time."""
    for attempt in range(1, attempts + 1):
        try:
            await start()
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("kafka_not_ready", component=what, attempt=attempt, error=repr(exc))
            await asyncio.sleep(delay)


def cli(bootstrap: Callable[[], ServiceRuntime], argv: Sequence[str] | None = None) -> None:
    """`backhaul-<service> serve|migrate|makemigration`."""
    parser = argparse.ArgumentParser(prog=f"backhaul-{bootstrap.__module__.split('.')[0]}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--role", choices=[r.value for r in Role], default=None)
    serve.add_argument("--port", type=int, default=None)
    commands.add_parser("migrate", help="bring the database to the latest migration")
    make = commands.add_parser("makemigration", help="autogenerate a migration from the models")
    make.add_argument("message")
    args = parser.parse_args(argv)

    runtime = bootstrap()
    if args.command == "serve":
        runtime.serve(Role(args.role) if args.role else None, args.port)
    elif args.command == "migrate":
        configure_logging(runtime.settings.service_name)
        runtime.migrate()
    else:
        with tempfile.TemporaryDirectory() as scratch:
            url = f"sqlite+aiosqlite:///{scratch}/autogenerate.db"
            migrations.upgrade(runtime.migrations_dir, url)
            migrations.make_revision(runtime.migrations_dir, url, args.message)
