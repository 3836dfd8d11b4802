"""The unit of work: one transaction, and the events staged in it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
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
BeforeCommit = Callable[["UnitOfWork"], Awaitable[None]]


class UnitOfWork:
    """A transaction plus an outbox. Handlers enter it; it commits when they leave.

    It nests: only the outermost exit commits, so the effect, the inbox row and the
    outgoing events land together or not at all. An inner block runs in a savepoint: if it
    raises, its changes (and its events) are rolled back while the outer transaction goes
    on, so a refused command can still be answered with a failure event. (A handler the
    consumer calls gets the consumer's open unit of work and does not enter it again.)

    `before_commit` hooks run once, as the last step of the outermost block, so work that
    many handlers in one transaction share (a consumer batch) is done once for all of them.
    Emitted events are held and written to the outbox with one statement after the hooks,
    just before the commit: a consumer batch that emits an event per message pays one
    insert, not one per message. Their order is the order of `emit` calls, which is the
    order they are published.
    """

    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox
        self._depth = 0
        self._stack: AsyncExitStack | None = None
        self._session: AsyncSession | None = None
        self._savepoints: list[tuple[Any, int, int, int]] = []
        self._before_commit: list[BeforeCommit] = []
        self.emitted: list[Envelope] = []
        self._unwritten: list[dict[str, Any]] = []

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
            self._unwritten = []
            self._before_commit = []
        else:
            self._savepoints.append(
                (
                    await self.session.begin_nested(),
                    len(self.emitted),
                    len(self._unwritten),
                    len(self._before_commit),
                )
            )
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._depth == 1 and exc_type is None:
            try:
                await self._run_before_commit()
                await self._write_outbox()
            except BaseException as error:
                exc_type, exc, tb = type(error), error, error.__traceback__
                await self._close(exc_type, exc, tb)
                raise
        await self._close(exc_type, exc, tb)

    async def _close(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth > 0:
            savepoint, emitted_before, unwritten_before, hooks_before = self._savepoints.pop()
            if exc_type is None:
                await savepoint.commit()
            else:
                await savepoint.rollback()
                del self.emitted[emitted_before:]
                del self._unwritten[unwritten_before:]
                del self._before_commit[hooks_before:]
            return
        self._before_commit = []
        self._unwritten = []
        stack, self._stack, self._session = self._stack, None, None
        assert stack is not None
        await stack.__aexit__(exc_type, exc, tb)
        if exc_type is None and self.emitted:
            self.outbox.notify()

    async def _write_outbox(self) -> None:
        rows, self._unwritten = self._unwritten, []
        await self.outbox.write(self.session, rows)

    def before_commit(self, hook: BeforeCommit) -> None:
        """Run `hook(uow)` once as the outermost block's last step, before it commits.

        Registering a hook that is already pending does nothing. A hook registered in a
        block that rolls back is dropped with it; one that raises rolls the transaction back.
        """
        if self._depth == 0:
            raise RuntimeError("the unit of work is not active: use `async with uow:`")
        if hook not in self._before_commit:
            self._before_commit.append(hook)

    async def _run_before_commit(self) -> None:
        # A hook may register another (it still runs): the list is read as it grows.
        done = 0
        while done < len(self._before_commit):
            await self._before_commit[done](self)
            done += 1

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
        self.session  # noqa: B018 - refuses an emit outside `async with uow:`
        (envelope,), rows = self.outbox.rows(
            [(event, subject)], topic=topic, causation_id=causation_id
        )
        self._unwritten += rows
        self.emitted.append(envelope)
        return envelope

    async def emit_many(
        self,
        events: Sequence[tuple[Event, str | int]],
        *,
        topic: str | None = None,
        event_ids: Sequence[UUID] | None = None,
    ) -> list[Envelope]:
        """Stage many `(event, subject)` pairs with one statement (bulk firing, replays).

        With `event_ids` the rows are written at once (after any held ones, to keep the
        order), so that a repeated id fails here, where the caller can guard against it."""
        if event_ids is None:
            envelopes, rows = self.outbox.rows(events, topic=topic)
            self._unwritten += rows
        else:
            await self._write_outbox()
            envelopes = await self.outbox.add_many(
                self.session, events, topic=topic, event_ids=event_ids
            )
        self.emitted.extend(envelopes)
        return envelopes
