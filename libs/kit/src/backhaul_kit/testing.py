"""Helpers for service tests against real components (used by every service's suite)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import httpx
from aiokafka import AIOKafkaConsumer

from backhaul_contracts import Envelope, decode
from backhaul_kit.auth import issue_token
from backhaul_kit.config import Role
from backhaul_kit.runtime import ServiceRuntime

T = TypeVar("T")


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
