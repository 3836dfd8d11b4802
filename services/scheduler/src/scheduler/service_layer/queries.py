"""Read-side queries of the scheduler API."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import func, select

from backhaul_kit.unit_of_work import UnitOfWork
from scheduler.adapters.tables import ScheduledEvent, Vacation
from scheduler.domain.rules import Action, State
from scheduler.service_layer import scheduled_events, vacations


async def scheduled_event(uow: UnitOfWork, event_id: UUID) -> ScheduledEvent:
    async with uow:
        return await scheduled_events.get_event(uow, event_id)


async def list_scheduled_events(
    uow: UnitOfWork,
    *,
    account_id: int | None = None,
    state: State | None = None,
    action: Action | None = None,
    vacation_id: UUID | None = None,
    run_from: datetime | None = None,
    run_to: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[ScheduledEvent], int]:
    """Scheduled events by account, state, action, vacation and run-time window, soonest first."""
    async with uow:
        filters = []
        if account_id is not None:
            filters.append(ScheduledEvent.account_id == account_id)
        if state is not None:
            filters.append(ScheduledEvent.state == state.value)
        if action is not None:
            filters.append(ScheduledEvent.action == action.value)
        if vacation_id is not None:
            filters.append(ScheduledEvent.vacation_id == vacation_id)
        if run_from is not None:
            filters.append(ScheduledEvent.run_at >= run_from)
        if run_to is not None:
            filters.append(ScheduledEvent.run_at < run_to)
        total = await uow.session.scalar(
            select(func.count()).select_from(ScheduledEvent).where(*filters)
        )
        rows = await uow.session.scalars(
            select(ScheduledEvent)
            .where(*filters)
            .order_by(ScheduledEvent.run_at, ScheduledEvent.sequence, ScheduledEvent.created_at)
            .limit(limit)
            .offset(offset)
        )
        return list(rows.all()), int(total or 0)


async def vacation(uow: UnitOfWork, vacation_id: UUID) -> tuple[Vacation, list[ScheduledEvent]]:
    async with uow:
        found = await vacations.get_vacation(uow, vacation_id)
        return found, await vacations.vacation_events(uow, vacation_id)


async def list_vacations(
    uow: UnitOfWork, *, account_id: int | None = None
) -> list[tuple[Vacation, list[ScheduledEvent]]]:
    async with uow:
        statement = select(Vacation).order_by(Vacation.leave_at)
        if account_id is not None:
            statement = statement.where(Vacation.account_id == account_id)
        found = list((await uow.session.scalars(statement)).all())
        return [(v, await vacations.vacation_events(uow, v.id)) for v in found]
