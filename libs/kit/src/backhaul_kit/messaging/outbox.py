"""Write integration events in the same transaction as the change they describe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from backhaul_contracts import Envelope, Event
from backhaul_kit.context import current_flow
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.telemetry import current_trace_headers


class Outbox:
    """A service's outbox: `add` stages an event in the caller's transaction.

    The relay is woken after the transaction commits (see `Outbox.notify`), so an event
    normally leaves within milliseconds and, if the process dies first, on the next poll.
    """

    def __init__(self, producer: str, *, topic_prefix: str = "") -> None:
        self.producer = producer
        self.topic_prefix = topic_prefix
        self._wakeup = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        # PostgreSQL: set by a process whose relay runs elsewhere (the API role), so that
        # its commits wake that relay through NOTIFY instead of waiting for its next look.
        self.notify_other_processes = False

    @property
    def channel(self) -> str:
        """The PostgreSQL NOTIFY channel of this outbox's relay."""
        return f"backhaul_outbox_{self.topic_prefix}{self.producer}".replace("-", "_").lower()

    async def add(
        self,
        session: AsyncSession,
        event: Event,
        *,
        subject: str | int,
        topic: str | None = None,
        correlation_id: UUID | None = None,
        causation_id: UUID | None = None,
    ) -> Envelope:
        """Stage `event` for publication when `session` commits; returns its envelope."""
        (envelope,) = await self.add_many(
            session,
            [(event, subject)],
            topic=topic,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        return envelope

    async def add_many(
        self,
        session: AsyncSession,
        events: Sequence[tuple[Event, str | int]],
        *,
        topic: str | None = None,
        correlation_id: UUID | None = None,
        causation_id: UUID | None = None,
        event_ids: Sequence[UUID] | None = None,
    ) -> list[Envelope]:
        """Stage `(event, subject)` pairs, in order, with one statement.

        `event_ids`, when given, become the envelopes' ids: the outbox's unique event id then
        refuses a second event with the same id, which callers can use as a guard.
        """
        envelopes, rows = self.rows(
            events,
            topic=topic,
            correlation_id=correlation_id,
            causation_id=causation_id,
            event_ids=event_ids,
        )
        await self.write(session, rows)
        return envelopes

    def rows(
        self,
        events: Sequence[tuple[Event, str | int]],
        *,
        topic: str | None = None,
        correlation_id: UUID | None = None,
        causation_id: UUID | None = None,
        event_ids: Sequence[UUID] | None = None,
    ) -> tuple[list[Envelope], list[dict[str, Any]]]:
        """The envelopes of `(event, subject)` pairs and their outbox rows, not yet written:
        the flow (correlation, causation) and trace context are the caller's, taken now."""
        if not events:
            return [], []
        flow = current_flow()
        headers = current_trace_headers()
        now = datetime.now(UTC)
        rows = []
        envelopes = []
        for i, (event, subject) in enumerate(events):
            target = topic or event.topic
            if not target:
                raise ValueError(f"{event.event_type} has no topic of its own: pass topic=")
            envelope = Envelope.wrap(
                event,
                producer=self.producer,
                subject=subject,
                correlation_id=correlation_id or flow.correlation_id,
                causation_id=causation_id or flow.causation_id,
                event_id=event_ids[i] if event_ids is not None else None,
            )
            envelopes.append(envelope)
            rows.append(
                {
                    "event_id": envelope.event_id,
                    "event_type": envelope.event_type,
                    "topic": f"{self.topic_prefix}{target}",
                    "key": envelope.subject,
                    "value": envelope.to_bytes(),
                    "headers": headers,
                    "created_at": now,
                }
            )
        return envelopes, rows

    async def write(self, session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
        """Insert outbox rows (from `rows`) in `session`'s transaction, in order, at once."""
        if rows:
            await session.execute(insert(outbox_messages), list(rows))
            if self.notify_other_processes:
                # Delivered when (and only if) the transaction commits.
                await session.execute(text("SELECT pg_notify(:c, '')"), {"c": self.channel})

    def notify(self) -> None:
        """Tell the relay (and whoever `listen`s) that a transaction with events committed:
        in this process, or, through NOTIFY on PostgreSQL, in another."""
        self._wakeup.set()
        for listener in self._listeners:
            listener()

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` (synchronously, cheaply) whenever `notify` is: a timer that must
        look again when something was written (a scheduled event created) uses it."""
        self._listeners.append(callback)

    async def wait(self, timeout: float) -> bool:
        """Wait for a wake-up at most `timeout` seconds; True if one came."""
        # asyncio.timeout, not wait_for: wait_for runs the wait as a task of its own, and a
        # relay cancelled while that task was finishing was seen to hang in its stop.
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        finally:
            self._wakeup.clear()
        return True
