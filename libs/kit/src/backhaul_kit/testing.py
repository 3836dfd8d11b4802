"""Helpers for service tests against real components (used by every service's suite)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer

from backhaul_contracts import Envelope, Event, decode
from backhaul_kit.auth import issue_token
from backhaul_kit.config import Role, ServiceSettings
from backhaul_kit.runtime import ServiceRuntime
from backhaul_kit.unit_of_work import UnitOfWork

T = TypeVar("T")
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)

NO_BROKER: dict[str, Any] = {"kafka_bootstrap_servers": "127.0.0.1:9", "kafka_create_topics": False}
"""Settings of a service that never reaches a broker: nothing listens on the discard port (a
test that reached for Kafka fails instead of finding a developer's broker), and no topics
are created. Tests on them call handlers or the consumer directly."""


def on_test_broker(
    settings: type[SettingsT],
    *,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    **extra: Any,
) -> SettingsT:
    """A service's settings for a test on the run's broker: the test's own topic prefix, two
    partitions, and retries fast enough for a test."""
    return settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        kafka_topic_partitions=2,
        consumer_retry_backoff_seconds=0.01,
        **extra,
    )


def without_broker(settings: type[SettingsT], database_url: str, **extra: Any) -> SettingsT:
    """A service's settings on `database_url` that never reach a broker (`NO_BROKER`)."""
    return settings(database_url=database_url, **{**NO_BROKER, **extra})


def bearer(
    runtime: ServiceRuntime, subject: str = "staff@isp", scopes: list[str] | None = None
) -> dict[str, str]:
    """An Authorization header with a token the runtime accepts (every scope unless given)."""
    settings = runtime.settings
    token = issue_token(
        settings.jwt_secret.get_secret_value(),
        subject=subject,
        scopes=scopes,
        audience=settings.jwt_audience,
    )
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def running(
    runtime: ServiceRuntime, *, worker: bool = True, subject: str = "staff@isp"
) -> AsyncIterator[httpx.AsyncClient]:
    """Migrate the service's database, start its worker, and give an HTTP client to its API.

    The client sends a bearer token for `subject` with every scope.
    """
    await asyncio.to_thread(runtime.migrate)
    if worker:
        await runtime.start_worker()
    app = runtime.create_app(Role.API)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=bearer(runtime, subject)
        ) as client:
            yield client
    finally:
        await runtime.stop()


class Handlers:
    """A service's handlers called directly on its real (migrated) database, no broker.

    `handle` delivers an event to an `on_*` handler the way the consumer does (inside an
    open unit of work, with an envelope) and returns what the handler emitted; `call` runs
    any handler that takes the unit of work first. Both commit, like the real thing.
    """

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    def uow(self) -> UnitOfWork:
        return self.runtime.uow()

    async def handle(
        self,
        handler: Callable[[Any, Envelope, UnitOfWork], Awaitable[None]],
        event: Event,
        *,
        subject: str | int,
        producer: str = "test",
    ) -> list[Envelope]:
        envelope = Envelope.wrap(event, producer=producer, subject=subject)
        async with self.uow() as uow:
            await handler(event, envelope, uow)
        return list(uow.emitted)

    async def call(
        self, handler: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> tuple[T, list[Envelope]]:
        async with self.uow() as uow:
            result = await handler(uow, *args, **kwargs)
        return result, list(uow.emitted)


@asynccontextmanager
async def handlers_on(runtime: ServiceRuntime) -> AsyncIterator[Handlers]:
    """Migrate `runtime`'s database (give it a SQLite file) and yield its handlers, with
    no Kafka, relay or HTTP started: the fixture of rule-level handler tests."""
    await asyncio.to_thread(runtime.migrate)
    try:
        yield Handlers(runtime)
    finally:
        await runtime.db.dispose()


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.1
) -> T:
    """Poll `check` until it returns without AssertionError (returning its value) or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


async def read_events(
    bootstrap: str, topic: str, *, count: int, timeout: float = 20.0, distinct: bool = False
) -> list[Envelope]:
    """Read envelopes from the start of `topic` until `count` have arrived (fails if fewer
    arrive in time). `distinct`: count different event ids, since at-least-once delivery
    may repeat one."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[Envelope] = []

    def seen() -> int:
        return len({e.event_id for e in out}) if distinct else len(out)

    deadline = time.monotonic() + timeout
    try:
        while seen() < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out += [decode(r.value)[0] for r in records]
    finally:
        await consumer.stop()
    assert seen() >= count, f"expected {count} events on {topic}, got {seen()}"
    return out
