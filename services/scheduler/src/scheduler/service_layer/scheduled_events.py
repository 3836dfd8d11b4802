"""Scheduled events: one action on an account, at a time; scheduled, edited, cancelled.

Called from the API: each handler owns its unit of work (`async with uow:`). Functions that
depend on the time take `now` (default: the clock) so tests can control it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import structlog
from sqlalchemy import select

from backhaul_contracts.events import scheduler as events
from backhaul_kit import clock
from backhaul_kit.errors import Conflict, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from scheduler.adapters.tables import ScheduledEvent
from scheduler.domain import rules
from scheduler.domain.rules import Action, State
from scheduler.service_layer.foresight import (
    ensure_catalogue_has,
    foresee,
    schedulable_account,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Schedule:
    """One action to run on an account at `run_at` (read in `time_zone` if it has no offset)."""

    account_id: int
    action: Action
    run_at: datetime
    time_zone: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


@dataclass(frozen=True)
class Reschedule:
    """An edit of a pending event; None leaves a field as it is."""

    run_at: datetime | None = None
    time_zone: str | None = None
    parameters: dict[str, Any] | None = None
    note: str | None = None


async def get_event(uow: UnitOfWork, event_id: UUID, *, for_update: bool = False) -> ScheduledEvent:
    """The scheduled event (404 if none), locked for an edit if `for_update` (PostgreSQL)."""
    statement = select(ScheduledEvent).where(ScheduledEvent.id == event_id)
    if for_update and not uow.db.is_sqlite:
        statement = statement.with_for_update()
    row = (await uow.session.execute(statement)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"scheduled event {event_id} not found")
    return row


def created_event(row: ScheduledEvent) -> events.ScheduledEventCreated:
    """What a new event announces (vacations create theirs the same way)."""
    return events.ScheduledEventCreated(
        scheduled_event_id=row.id,
        account_id=row.account_id,
        action=row.action,
        run_at=row.run_at,
        created_by=row.created_by,
        parameters=row.parameters,
        note=row.note,
        vacation_id=row.vacation_id,
        warnings=row.warnings,
    )


def cancel_row(row: ScheduledEvent, actor: str, now: datetime) -> events.ScheduledEventCancelled:
    """Mark a pending row cancelled by `actor`; returns the event announcing it."""
    row.state = State.CANCELLED.value
    row.cancelled_at = now
    row.cancelled_by = actor
    row.updated_at = now
    return events.ScheduledEventCancelled(
        scheduled_event_id=row.id,
        account_id=row.account_id,
        action=row.action,
        run_at=row.run_at,
        cancelled_at=now,
        cancelled_by=actor,
        vacation_id=row.vacation_id,
    )


def failed_event(row: ScheduledEvent, now: datetime) -> events.ScheduledEventFailed:
    """What a failed row announces: unsendable, unanswered or refused by its owner."""
    return events.ScheduledEventFailed(
        scheduled_event_id=row.id,
        account_id=row.account_id,
        action=row.action,
        failed_at=now,
        reason=row.failure_reason or "",
        code=row.failure_code,
        vacation_id=row.vacation_id,
    )


async def schedule(
    uow: UnitOfWork, command: Schedule, *, actor: str, now: datetime | None = None
) -> ScheduledEvent:
    """Schedule one action on an account; emit ScheduledEventCreated.

    Refuses an unknown or disconnected account, bad parameters (among them a status or a
    service to add that does not exist), a malformed time zone and a time in the past; warns
    when the event can already be seen to fail at its time.
    """
    now = now or clock.now()
    async with uow:
        await schedulable_account(uow, command.account_id)
        parameters = rules.parse_parameters(command.action, command.parameters)
        await ensure_catalogue_has(uow, parameters)
        run_at, warnings = rules.resolve_run_at(command.run_at, command.time_zone)
        rules.ensure_future(run_at, now)
        warnings += await foresee(uow, command.account_id, command.action, parameters, run_at, 0)
        row = ScheduledEvent(
            id=uuid4(),
            account_id=command.account_id,
            action=command.action.value,
            parameters=rules.stored_parameters(parameters),
            run_at=run_at,
            sequence=0,
            time_zone=command.time_zone,
            state=State.PENDING.value,
            note=command.note,
            warnings=warnings,
            created_by=actor,
            created_at=now,
            updated_at=now,
            outcome={},
        )
        uow.session.add(row)
        await uow.session.flush()
        await uow.emit(created_event(row), subject=row.account_id)
        log.info("scheduled_event_created", scheduled_event_id=str(row.id), action=row.action)
        return row


async def reschedule(
    uow: UnitOfWork,
    event_id: UUID,
    change: Reschedule,
    *,
    actor: str,
    now: datetime | None = None,
) -> ScheduledEvent:
    """Edit a pending event's time, parameters or note (409 once it has fired); new
    parameters are refused like a new event's."""
    now = now or clock.now()
    async with uow:
        row = await get_event(uow, event_id, for_update=True)
        rules.ensure_pending(State(row.state), row.id, "edited")
        if row.vacation_id is not None:
            raise Conflict(
                f"scheduled event {row.id} belongs to vacation {row.vacation_id}: "
                "change the vacation instead"
            )
        await schedulable_account(uow, row.account_id)
        action = Action(row.action)
        raw = change.parameters if change.parameters is not None else row.parameters
        parameters = rules.parse_parameters(action, raw)
        if change.parameters is not None:
            # New parameters are checked like a new event's; unchanged ones were at creation.
            await ensure_catalogue_has(uow, parameters)
        warnings: list[str] = []
        run_at = row.run_at
        zone = change.time_zone if change.time_zone is not None else row.time_zone
        if change.run_at is not None:
            run_at, warnings = rules.resolve_run_at(change.run_at, zone)
            rules.ensure_future(run_at, now)
        elif change.time_zone is not None:
            rules.time_zone(change.time_zone)
        warnings += await foresee(
            uow, row.account_id, action, parameters, run_at, row.sequence, exclude=row.id
        )
        row.run_at = run_at
        row.time_zone = zone
        row.parameters = rules.stored_parameters(parameters)
        if change.note is not None:
            row.note = change.note
        row.warnings = warnings
        row.updated_at = now
        log.info("scheduled_event_rescheduled", scheduled_event_id=str(row.id), by=actor)
        return row


async def cancel(
    uow: UnitOfWork, event_id: UUID, *, actor: str, now: datetime | None = None
) -> ScheduledEvent:
    """Cancel a pending event (409 once it has fired); emit ScheduledEventCancelled."""
    now = now or clock.now()
    async with uow:
        row = await get_event(uow, event_id, for_update=True)
        rules.ensure_pending(State(row.state), row.id, "cancelled")
        if row.vacation_id is not None:
            raise Conflict(
                f"scheduled event {row.id} belongs to vacation {row.vacation_id}: "
                "cancel the vacation instead"
            )
        await uow.emit(cancel_row(row, actor, now), subject=row.account_id)
        return row
