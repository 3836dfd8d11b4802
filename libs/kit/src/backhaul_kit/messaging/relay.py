"""The outbox relay: publishes committed events with an idempotent producer, acks=all.

It reads unpublished rows in id order, sends them (keyed by account, so one account's
events keep their order), waits for every acknowledgement, then marks them published.
A crash between send and mark resends: consumers are idempotent by event id.

On PostgreSQL, replicas elect one active relay with an advisory lock, so rows are never
published out of order by two relays at once; the others stand by.

An idle relay does not poll the table at a fixed pace: a commit in its own process wakes
it at once (`Outbox.notify`), and so does, on PostgreSQL, a commit in any other process
(the API role sends NOTIFY on the outbox's channel, which the leader LISTENs to on the
connection that holds its lock). Between wake-ups it looks again after `poll_interval`,
doubling while it finds nothing, up to `idle_poll`: the look-again is only the safety net
for a wake-up lost with a crashed process or a dropped connection.
"""

from __future__ import annotations

import asyncio
import zlib
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from backhaul_kit.db import Database
from backhaul_kit.messaging.outbox import Outbox
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.metrics import OUTBOX_PUBLISHED
from backhaul_kit.telemetry import context_from_headers, current_trace_headers, tracer

log = structlog.get_logger(__name__)


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.05,
        idle_poll: float = 1.0,
        lock_name: str = "outbox",
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.producer = producer
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.idle_poll = max(idle_poll, poll_interval)
        self._lock_key = zlib.crc32(f"backhaul:{lock_name}".encode())
        self._lock_connection: AsyncConnection | None = None
        self.published = 0

    async def run(self) -> None:
        """Publish until cancelled; a failed round is logged and retried with backoff."""
        backoff = self.poll_interval
        pause = self.poll_interval
        try:
            while True:
                try:
                    if not await self._is_leader():
                        await asyncio.sleep(1.0)
                        continue
                    sent = await self.publish_batch()
                    backoff = self.poll_interval
                    if sent >= self.batch_size:
                        continue
                    pause = self.poll_interval if sent else min(pause * 2, self.idle_poll)
                    if await self.outbox.wait(pause):
                        pause = self.poll_interval
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("outbox_publish_failed", retry_in=backoff)
                    await self._drop_lock()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            await self._drop_lock()

    async def publish_batch(self) -> int:
        """Publish one batch of unpublished events; returns how many were sent."""
        async with self.db.sessions() as session:
            rows = (
                await session.execute(
                    select(outbox_messages)
                    .where(outbox_messages.c.published_at.is_(None))
                    .order_by(outbox_messages.c.id)
                    .limit(self.batch_size)
                )
            ).all()
        if not rows:
            return 0
        futures = [await self._send(row) for row in rows]
        await asyncio.gather(*futures)
        async with self.db.transaction() as session:
            await session.execute(
                update(outbox_messages)
                .where(outbox_messages.c.id.in_([row.id for row in rows]))
                .values(published_at=datetime.now(UTC))
            )
        self.published += len(rows)
        OUTBOX_PUBLISHED.labels(self.outbox.producer).inc(len(rows))
        return len(rows)

    async def _send(self, row: Any) -> asyncio.Future[Any]:
        parent = context_from_headers(row.headers or {})
        with tracer().start_as_current_span(
            f"{row.topic} publish",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": row.topic,
                "messaging.message.id": str(row.event_id),
                "backhaul.event_type": row.event_type,
                "backhaul.account_id": row.key,
            },
        ):
            headers = [(k, v.encode()) for k, v in current_trace_headers().items()]
            headers.append(("event_type", row.event_type.encode()))
            headers.append(("event_id", str(row.event_id).encode()))
            future: asyncio.Future[Any] = await self.producer.send(
                row.topic, value=row.value, key=row.key.encode(), headers=headers
            )
            trace.get_current_span().set_attribute("messaging.kafka.message.key", row.key)
        return future

    async def _is_leader(self) -> bool:
        if self.db.is_sqlite:
            return True  # one writer per SQLite file: nothing to elect
        if self._lock_connection is not None:
            return True
        connection = await self.db.engine.connect()
        got = (
            await connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._lock_key})
        ).scalar()
        await connection.commit()
        if got:
            self._lock_connection = connection
            raw = await connection.get_raw_connection()
            await raw.driver_connection.add_listener(  # type: ignore[union-attr]
                self.outbox.channel, lambda *_: self.outbox.notify()
            )
            log.info("outbox_relay_leader", channel=self.outbox.channel)
            return True
        await connection.close()
        return False

    async def _drop_lock(self) -> None:
        if self._lock_connection is not None:
            connection, self._lock_connection = self._lock_connection, None
            try:
                await connection.close()
            except Exception:  # the connection may already be gone; the lock goes with it
                log.warning("outbox_lock_close_failed")
