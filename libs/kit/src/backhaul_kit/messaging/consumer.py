"""Idempotent event consumption: inbox, bounded retries, then the dead-letter topic.

Each message is handled in one database transaction together with its inbox row; the
offset is committed only after that transaction commits (FastStream's NACK_ON_ERROR ack
policy with manual commits). A message that keeps failing is retried a bounded number of
times in place, which holds back the partition so no later message overtakes it, then it
goes to `<topic>.<group>.dlq` with the error and the partition moves on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar, cast

import structlog
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from opentelemetry import trace

from backhaul_contracts import Envelope, Event, InvalidEventError, UnknownEventError, decode
from backhaul_contracts.topics import dead_letter_topic
from backhaul_kit.context import flow
from backhaul_kit.db import Database
from backhaul_kit.messaging import inbox
from backhaul_kit.messaging.outbox import Outbox
from backhaul_kit.metrics import DEAD_LETTERS, EVENT_FAILURES, EVENT_LATENCY, EVENTS_HANDLED
from backhaul_kit.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

EventT = TypeVar("EventT", bound=Event)
Handler = Callable[[Any, Envelope, UnitOfWork], Awaitable[None]]
"""A handler gets the event, its envelope and the open unit of work of the inbox claim."""


class Outcome(StrEnum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class Record:
    """A Kafka record as the consumer needs it."""

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int = 0
    offset: int = 0
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)


class DeadLetterPublisher(Protocol):
    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any: ...


class EventConsumer:
    """A service's consumer group: typed handlers for the events it reacts to."""

    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        *,
        group: str,
        max_attempts: int = 5,
        retry_backoff: float = 0.2,
        topic_prefix: str = "",
        service: str | None = None,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.group = group
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.topic_prefix = topic_prefix
        self.service = service or group
        self.dead_letters: DeadLetterPublisher | None = None
        self._handlers: dict[type[Event], Handler] = {}
        self._topics: set[str] = set()

    @property
    def topics(self) -> list[str]:
        return sorted(self._topics)

    def on(self, event_type: type[EventT]) -> Callable[[Handler], Handler]:
        """Register the handler of `event_type`; it runs inside the inbox transaction."""
        if not event_type.topic:
            raise ValueError(f"{event_type.event_type} has no topic; subscribe with `on_topic`")
        return self.on_topic(event_type, event_type.topic)

    def on_topic(self, event_type: type[EventT], topic: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self._handlers[event_type] = handler
            self._topics.add(topic)
            return handler

        return register

    def subscribe(self, broker: KafkaBroker) -> None:
        """Attach this consumer to a FastStream broker with manual, after-effect commits."""
        if not self._topics:
            return

        async def raw_body(message: Any) -> bytes:
            return bytes(message.body)

        @broker.subscriber(
            *[f"{self.topic_prefix}{topic}" for topic in self.topics],
            # Runs that share a broker under different topic prefixes (tests, benchmarks) must
            # not share a consumer group, or they rebalance one another all the time.
            group_id=f"{self.topic_prefix}{self.group}",
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=raw_body,
        )
        async def on_message(body: bytes, message: KafkaMessage) -> None:
            raw = cast(ConsumerRecord, message.raw_message)
            await self.process(
                Record(
                    topic=raw.topic,
                    value=raw.value,
                    key=raw.key,
                    partition=raw.partition,
                    offset=raw.offset,
                    headers=tuple(raw.headers or ()),
                )
            )

    async def process(self, record: Record) -> Outcome:
        """Handle one record exactly once in effect; raises only if dead-lettering fails."""
        started = time.perf_counter()
        outcome, event_type = await self._process(record)
        EVENTS_HANDLED.labels(self.service, event_type, outcome.value).inc()
        if outcome is not Outcome.IGNORED:
            EVENT_LATENCY.labels(self.service, event_type).observe(time.perf_counter() - started)
        return outcome

    async def _process(self, record: Record) -> tuple[Outcome, str]:
        try:
            envelope, event = decode(record.value)
        except (InvalidEventError, UnknownEventError) as exc:
            await self._dead_letter(record, exc, attempts=1)
            return Outcome.DEAD_LETTERED, "undecodable"
        span = trace.get_current_span()
        span.set_attribute("backhaul.event_id", str(envelope.event_id))
        span.set_attribute("backhaul.event_type", envelope.event_type)
        span.set_attribute("backhaul.account_id", envelope.subject)
        handler = self._handlers.get(type(event))
        if handler is None:
            return Outcome.IGNORED, envelope.event_type
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self._handle_once(handler, event, envelope), envelope.event_type
            except Exception as exc:
                EVENT_FAILURES.labels(self.service, envelope.event_type).inc()
                log.warning(
                    "event_handling_failed",
                    event_type=envelope.event_type,
                    event_id=str(envelope.event_id),
                    attempt=attempt,
                    error=repr(exc),
                )
                if attempt == self.max_attempts:
                    await self._dead_letter(record, exc, attempts=attempt)
                    return Outcome.DEAD_LETTERED, envelope.event_type
                await asyncio.sleep(self.retry_backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _handle_once(self, handler: Handler, event: Event, envelope: Envelope) -> Outcome:
        with (
            flow(envelope.correlation_id, envelope.event_id),
            structlog.contextvars.bound_contextvars(
                account_id=envelope.subject, event_id=str(envelope.event_id)
            ),
        ):
            async with UnitOfWork(self.db, self.outbox) as uow:
                if not await inbox.claim(uow.session, self.group, envelope):
                    log.info("event_duplicate_skipped", event_id=str(envelope.event_id))
                    return Outcome.DUPLICATE
                await handler(event, envelope, uow)
        log.info(
            "event_handled",
            event_type=envelope.event_type,
            event_id=str(envelope.event_id),
            account_id=envelope.subject,
        )
        return Outcome.HANDLED

    async def _dead_letter(self, record: Record, error: BaseException, *, attempts: int) -> None:
        if self.dead_letters is None:
            raise RuntimeError("no dead-letter publisher configured") from error
        target = dead_letter_topic(record.topic, self.group)
        headers = [h for h in record.headers if not h[0].startswith("dlq.")]
        headers += [
            ("dlq.error", f"{type(error).__name__}: {error}"[:4000].encode()),
            ("dlq.original_topic", record.topic.encode()),
            ("dlq.original_partition", str(record.partition).encode()),
            ("dlq.original_offset", str(record.offset).encode()),
            ("dlq.consumer_group", self.group.encode()),
            ("dlq.attempts", str(attempts).encode()),
            ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        await self.dead_letters.send_and_wait(
            target, value=record.value, key=record.key, headers=headers
        )
        DEAD_LETTERS.labels(self.service, record.topic).inc()
        log.error(
            "event_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            dead_letter_topic=target,
            error=str(error),
        )
