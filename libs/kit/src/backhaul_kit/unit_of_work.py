"""The unit of work: one transaction, and the events staged in it."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from backhaul_contracts import Envelope, Event
from backhaul_kit.db import Database
from backhaul_kit.errors import NotFound
from backhaul_kit.messaging.outbox import Outbox

RowT = TypeVar("RowT")


class UnitOfWork:
    """A transaction plus an outbox. Handlers enter it; it commits when they leave.

    It nests: a consumer opens it to claim the inbox row, the handler enters it again, and
    only the outermost exit commits, so the effect, the inbox row and the outgoing events
    land together or not at all. An inner block runs in a savepoint: if it raises, its
    changes (and its events) are rolled back while the outer transaction goes on, so a
    refused command can still be answered with a failure event.
    """

    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox
        self._depth = 0
        self._stack: AsyncExitStack | None = None
        self._session: AsyncSession | None = None
        self._savepoints: list[Any] = []
        self.emitted: list[Envelope] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is not active: use `async with uow:`")
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        if self._depth == 0:
            stack = AsyncExitStack()
            session = await stack.enter_async_context(self.db.sessions())
            await stack.enter_async_context(session.begin())
            self._stack, self._session = stack, session
            self.emitted = []
        else:
            self._savepoints.append((await self.session.begin_nested(), len(self.emitted)))
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth > 0:
            savepoint, emitted_before = self._savepoints.pop()
            if exc_type is None:
                await savepoint.commit()
            else:
                await savepoint.rollback()
                del self.emitted[emitted_before:]
            return
        stack, self._stack, self._session = self._stack, None, None
        assert stack is not None
        await stack.__aexit__(exc_type, exc, tb)
        if exc_type is None and self.emitted:
            self.outbox.notify()

    async def get(self, model: type[RowT], key: Any, *, not_found: str) -> RowT:
        """The row of `model` with primary key `key`, or NotFound with the given message."""
        row = await self.session.get(model, key)
        if row is None:
            raise NotFound(not_found)
        return row

    async def emit(
        self,
        event: Event,
        *,
        subject: str | int,
        topic: str | None = None,
        causation_id: UUID | None = None,
    ) -> Envelope:
        """Stage an event to be published once this unit of work commits."""
        envelope = await self.outbox.add(
            self.session, event, subject=subject, topic=topic, causation_id=causation_id
        )
        self.emitted.append(envelope)
        return envelope

    async def emit_many(
        self,
        events: Sequence[tuple[Event, str | int]],
        *,
        topic: str | None = None,
        event_ids: Sequence[UUID] | None = None,
    ) -> list[Envelope]:
        """Stage many `(event, subject)` pairs with one statement (bulk firing, replays)."""
        envelopes = await self.outbox.add_many(
            self.session, events, topic=topic, event_ids=event_ids
        )
        self.emitted.extend(envelopes)
        return envelopes
