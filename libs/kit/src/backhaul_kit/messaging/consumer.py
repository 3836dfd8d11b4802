"""Idempotent event consumption: inbox, bounded retries, then the dead-letter topic.

The consumer takes what Kafka has ready in one poll (up to `batch_size` records) and
handles it in one database transaction: each event's inbox row and effect, in partition
order. The offsets are committed only after that transaction commits (FastStream's
NACK_ON_ERROR ack policy with manual commits), so a crash anywhere replays the batch and
the inbox turns the replay into no-ops. One transaction and one offset commit per batch
instead of per message is what lets a consumer keep up with a storm.

If anything in a batch fails, the whole transaction rolls back and the batch is handled
again one message at a time: each message in its own transaction, a failing one retried a
bounded number of times in place (which holds back its partition, so no later message
overtakes it), then sent to `<topic>.<group>.dlq` with the error, and the partition moves
on. A failure never skips a message and never applies one twice.

Handlers: one per event type (registering a second, different one for the same type is an
error at start-up, not a silent replacement). A handler receives the event, its envelope and
the consumer's open unit of work, and never enters that unit of work again: the consumer
owns the transaction (and its commit), so a handler adds no savepoint and no commit of its
own. Work that every handler of a batch shares is registered with `uow.before_commit` and
done once. Handlers called from the API are the other kind: they own their unit of work.

Events a group has no handler for are dropped by their `event_type` header before the
record is parsed, so most deliveries of a fan-out cost next to nothing.

A failure while the service's database does not answer (it is down, restarting, or out of
reach) is not the message's fault and does not count as an attempt: the consumer checks the
database after each failure and, while it is unreachable, waits for it without limit, with
backoff, holding its partitions (nothing behind the message is handled meanwhile), then
tries the batch again. Only failures with the database up count towards `max_attempts`, so
an outage dead-letters nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar, cast

import structlog
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from opentelemetry import trace
from opentelemetry.trace import Span

from backhaul_contracts import Envelope, Event, InvalidEventError, UnknownEventError, decode
from backhaul_contracts.topics import dead_letter_topic
from backhaul_kit.context import flow
from backhaul_kit.db import Database
from backhaul_kit.messaging import inbox
from backhaul_kit.messaging.outbox import Outbox
from backhaul_kit.metrics import (
    CONSUMER_BATCH_SIZE,
    DEAD_LETTERS,
    EVENT_FAILURES,
    EVENT_LATENCY,
    EVENTS_HANDLED,
)
from backhaul_kit.telemetry import context_from_headers, tracer
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

    @classmethod
    def of_event(
        cls, event: Event, *, subject: str | int, offset: int = 0, producer: str = "test"
    ) -> Record:
        """The record the relay would publish for `event` (its topic, its key, its
        `event_type` header): for tests and benchmarks that feed a consumer directly."""
        envelope = Envelope.wrap(event, producer=producer, subject=subject)
        return cls(
            topic=event.topic,
            value=envelope.to_bytes(),
            key=str(subject).encode(),
            offset=offset,
            headers=(("event_type", envelope.event_type.encode()),),
        )

    @classmethod
    def of(cls, raw: ConsumerRecord[Any, Any]) -> Record:
        return cls(
            topic=raw.topic,
            value=raw.value,
            key=raw.key,
            partition=raw.partition,
            offset=raw.offset,
            headers=tuple(raw.headers or ()),
        )


@dataclass(frozen=True)
class _Decoded:
    """A record this consumer has a handler for, decoded."""

    record: Record
    envelope: Envelope
    event: Event
    handler: Handler


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
        batch_size: int = 500,
        batch_wait_ms: int = 20,
        fetch_bytes_per_partition: int = 262_144,
        database_probe_timeout: float = 5.0,
        database_retry_max_seconds: float = 5.0,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.group = group
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.topic_prefix = topic_prefix
        self.service = service or group
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        self.fetch_bytes_per_partition = fetch_bytes_per_partition
        self.database_probe_timeout = database_probe_timeout
        self.database_retry_max_seconds = database_retry_max_seconds
        self.dead_letters: DeadLetterPublisher | None = None
        self._handlers: dict[type[Event], Handler] = {}
        self._handled_types: set[str] = set()
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
            known = self._handlers.get(event_type)
            if known is not None and known is not handler:
                # One event type, one handler: a second one would silently replace the first.
                raise ValueError(
                    f"{self.group} already handles {event_type.event_type} with "
                    f"{known.__qualname__}; refusing {handler.__qualname__}"
                )
            self._handlers[event_type] = handler
            self._handled_types.add(event_type.event_type)
            self._topics.add(topic)
            return handler

        return register

    def subscribe(self, broker: KafkaBroker) -> None:
        """Attach this consumer to a FastStream broker with manual, after-effect commits."""
        if not self._topics:
            return

        async def no_body(message: Any) -> None:
            return None  # the handler works on the raw records

        @broker.subscriber(
            *[f"{self.topic_prefix}{topic}" for topic in self.topics],
            # Runs that share a broker under different topic prefixes (tests, benchmarks) must
            # not share a consumer group, or they rebalance one another all the time.
            group_id=f"{self.topic_prefix}{self.group}",
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            batch=True,
            max_records=self.batch_size,
            batch_timeout_ms=self.batch_wait_ms,
            # aiokafka keeps a fetch response per partition (1 MiB by default) ready: a
            # consumer lagging on 24 partitions held 24 MiB of prefetch and more in records.
            max_partition_fetch_bytes=self.fetch_bytes_per_partition,
            decoder=no_body,
        )
        async def on_batch(body: Any, message: KafkaMessage) -> None:
            raw = message.raw_message
            records = raw if isinstance(raw, tuple) else (raw,)
            await self.process_batch([Record.of(cast(ConsumerRecord, r)) for r in records])

    async def process_batch(self, records: list[Record]) -> list[Outcome]:
        """Handle a polled batch in one transaction; on any failure, one record at a time.

        Returns each record's outcome, in order. Raises only if dead-lettering fails."""
        outcomes: list[Outcome | None] = [None] * len(records)
        batch: list[tuple[int, _Decoded]] = []
        for n, record in enumerate(records):
            decoded = await self._decode(record)
            if isinstance(decoded, _Decoded):
                batch.append((n, decoded))
            else:
                outcomes[n] = decoded
        if len(batch) > 1:
            together = await self._try_together([d for _, d in batch])
            if together is not None:
                for (n, _), outcome in zip(batch, together, strict=True):
                    outcomes[n] = outcome
                batch = []
        for n, decoded in batch:  # one alone, or a batch that failed: one at a time
            outcomes[n] = await self._handle(decoded)
        return [outcome or Outcome.IGNORED for outcome in outcomes]

    async def process(self, record: Record) -> Outcome:
        """Handle one record exactly once in effect; raises only if dead-lettering fails."""
        decoded = await self._decode(record)
        if not isinstance(decoded, _Decoded):
            return decoded
        return await self._handle(decoded)

    async def _decode(self, record: Record) -> _Decoded | Outcome:
        # The relay names the event type in a header: an event this group has no handler
        # for is dropped before any parsing (most deliveries of a fan-out are such events).
        for name, value in record.headers:
            if name == "event_type":
                event_type = value.decode(errors="replace")
                if event_type not in self._handled_types:
                    EVENTS_HANDLED.labels(self.service, event_type, Outcome.IGNORED.value).inc()
                    return Outcome.IGNORED
                break
        try:
            envelope, event = decode(record.value)
        except (InvalidEventError, UnknownEventError) as exc:
            await self._dead_letter(record, exc, attempts=1)
            EVENTS_HANDLED.labels(self.service, "undecodable", Outcome.DEAD_LETTERED.value).inc()
            return Outcome.DEAD_LETTERED
        handler = self._handlers.get(type(event))
        if handler is None:
            EVENTS_HANDLED.labels(self.service, envelope.event_type, Outcome.IGNORED.value).inc()
            return Outcome.IGNORED
        return _Decoded(record, envelope, event, handler)

    async def _try_together(self, batch: list[_Decoded]) -> list[Outcome] | None:
        """The batch in one transaction, again after a database outage; None if it failed
        for any other reason (the caller then handles it one event at a time)."""
        CONSUMER_BATCH_SIZE.labels(self.service).observe(len(batch))
        while True:
            try:
                return await self._handle_together(batch)
            except Exception as exc:
                if not await self._waited_for_database(exc):
                    log.warning("event_batch_failed", size=len(batch), error=repr(exc))
                    return None

    async def _handle_together(self, batch: list[_Decoded]) -> list[Outcome]:
        """Every event of the batch, its inbox row and its effect in one transaction."""
        outcomes: list[Outcome] = []
        timings: list[float] = []
        async with UnitOfWork(self.db, self.outbox) as uow:
            fresh = await inbox.claim_many(uow.session, self.group, [d.envelope for d in batch])
            for decoded in batch:
                started = time.perf_counter()
                # The first of an event id in the batch is the one to handle.
                first = decoded.envelope.event_id in fresh
                fresh.discard(decoded.envelope.event_id)
                outcomes.append(await self._apply(decoded, uow, claimed=first))
                timings.append(time.perf_counter() - started)
        by_type: dict[str, int] = {}
        for decoded, outcome, seconds in zip(batch, outcomes, timings, strict=True):
            self._count(decoded, outcome, seconds)
            by_type[decoded.envelope.event_type] = by_type.get(decoded.envelope.event_type, 0) + 1
        log.info(
            "event_batch_handled",
            consumer_group=self.group,
            size=len(batch),
            handled=outcomes.count(Outcome.HANDLED),
            duplicates=outcomes.count(Outcome.DUPLICATE),
            event_types=by_type,
        )
        return outcomes

    async def _handle(self, decoded: _Decoded) -> Outcome:
        """One event in its own transaction, retried in place, then dead-lettered. Failures
        while the database is unreachable are waited out and not counted."""
        envelope = decoded.envelope
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                async with UnitOfWork(self.db, self.outbox) as uow:
                    outcome = await self._apply(decoded, uow)
            except Exception as exc:
                if await self._waited_for_database(exc):
                    continue
                attempt += 1
                EVENT_FAILURES.labels(self.service, envelope.event_type).inc()
                log.warning(
                    "event_handling_failed",
                    event_type=envelope.event_type,
                    event_id=str(envelope.event_id),
                    attempt=attempt,
                    error=repr(exc),
                )
                if attempt >= self.max_attempts:
                    await self._dead_letter(decoded.record, exc, attempts=attempt)
                    self._count(decoded, Outcome.DEAD_LETTERED, time.perf_counter() - started)
                    return Outcome.DEAD_LETTERED
                await asyncio.sleep(self.retry_backoff * 2 ** (attempt - 1))
            else:
                self._count(decoded, outcome, time.perf_counter() - started)
                return outcome

    async def _waited_for_database(self, error: BaseException) -> bool:
        """After a failure: if the database does not answer, wait until it does, however
        long, and return True (the failure was the database's, not the event's); False at
        once if it answers. Waiting here holds the partitions of the batch: nothing behind
        the failed events is handled, or committed, before they are."""
        if await self._database_answers():
            return False
        log.warning("consumer_waiting_for_database", consumer_group=self.group, error=repr(error))
        started = time.monotonic()
        pause = max(self.retry_backoff, 0.1)
        while not await self._database_answers():
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.database_retry_max_seconds)
        log.warning(
            "consumer_database_back",
            consumer_group=self.group,
            waited_seconds=round(time.monotonic() - started, 1),
        )
        return True

    async def _database_answers(self) -> bool:
        try:
            async with asyncio.timeout(self.database_probe_timeout):
                await self.db.ping()
        except Exception:  # refused, reset, shutting down, starting up, timed out
            return False
        return True

    async def _apply(
        self, decoded: _Decoded, uow: UnitOfWork, *, claimed: bool | None = None
    ) -> Outcome:
        """Claim the event's inbox row (unless the batch `claimed` it already) and run its
        handler, inside `uow`'s transaction, in the event's own trace, correlation and log
        context."""
        envelope = decoded.envelope
        with (
            self._span(decoded),
            flow(envelope.correlation_id, envelope.event_id),
            structlog.contextvars.bound_contextvars(
                account_id=envelope.subject, event_id=str(envelope.event_id)
            ),
        ):
            if claimed is None:
                claimed = await inbox.claim(uow.session, self.group, envelope)
            if not claimed:
                log.info("event_duplicate_skipped", event_id=str(envelope.event_id))
                return Outcome.DUPLICATE
            await decoded.handler(decoded.event, envelope, uow)
            # Per event at DEBUG: at INFO a storm would spend more on this line than on
            # the event. A batch logs one `event_batch_handled` line at INFO instead.
            log.debug(
                "event_handled",
                event_type=envelope.event_type,
                event_id=str(envelope.event_id),
                account_id=envelope.subject,
            )
        return Outcome.HANDLED

    def _span(self, decoded: _Decoded) -> AbstractContextManager[Span]:
        """A consumer span that continues the producer's trace (from the record's headers)."""
        record, envelope = decoded.record, decoded.envelope
        return tracer().start_as_current_span(
            f"{record.topic} process",
            context=context_from_headers(record.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": self.group,
                "backhaul.event_id": str(envelope.event_id),
                "backhaul.event_type": envelope.event_type,
                "backhaul.account_id": envelope.subject,
            },
        )

    def _count(self, decoded: _Decoded, outcome: Outcome, seconds: float) -> None:
        event_type = decoded.envelope.event_type
        EVENTS_HANDLED.labels(self.service, event_type, outcome.value).inc()
        EVENT_LATENCY.labels(self.service, event_type).observe(seconds)

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
