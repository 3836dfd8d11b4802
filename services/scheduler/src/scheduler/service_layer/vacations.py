"""Vacations: the linked status and data-service changes on leaving and returning (seed 002),
planned, moved and cancelled as one.

Called from the API: each handler owns its unit of work (`async with uow:`). Functions that
depend on the time take `now` (default: the clock) so tests can control it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

import structlog
from sqlalchemy import select

from backhaul_contracts.common import ServiceKind
from backhaul_kit import clock
from backhaul_kit.errors import Conflict, InvalidInput
from backhaul_kit.unit_of_work import UnitOfWork
from scheduler.adapters.tables import (
    KnownAccountService,
    KnownService,
    ScheduledEvent,
    Vacation,
)
from scheduler.domain import rules
from scheduler.domain.rules import Action, State
from scheduler.service_layer.foresight import (
    foresee,
    known_service,
    known_status,
    schedulable_account,
)
from scheduler.service_layer.scheduled_events import cancel_row, created_event

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PlanVacation:
    """A vacation to plan; the normal status and data service default to the current ones."""

    account_id: int
    leave_at: datetime
    return_at: datetime
    vacation_status_id: int
    vacation_service_id: int
    time_zone: str | None = None
    normal_status_id: int | None = None
    normal_service_id: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class ReplanVacation:
    """New dates for a vacation; None keeps a date as it is."""

    leave_at: datetime | None = None
    return_at: datetime | None = None
    time_zone: str | None = None


async def _current_data_service(uow: UnitOfWork, account_id: int) -> int | None:
    data = list(
        await uow.session.scalars(
            select(KnownAccountService.service_id)
            .join(KnownService, KnownService.id == KnownAccountService.service_id)
            .where(
                KnownAccountService.account_id == account_id,
                KnownService.kind == ServiceKind.DATA.value,
            )
        )
    )
    if len(set(data)) > 1:
        raise InvalidInput(
            f"account {account_id} has several data services ({sorted(set(data))}): "
            "name the normal_service_id to swap out"
        )
    return data[0] if data else None


async def plan_vacation(
    uow: UnitOfWork, command: PlanVacation, *, actor: str, now: datetime | None = None
) -> tuple[Vacation, list[ScheduledEvent]]:
    """Create a vacation's linked events: on leaving, status to the vacation status and the data
    service swapped for the vacation one; on returning, the reverse (seed 002).

    The normal status and data service default to the account's current ones. Every status
    and service it names must exist (422 naming the unknown one), or nothing is created.
    """
    now = now or clock.now()
    async with uow:
        account = await schedulable_account(uow, command.account_id)
        await known_status(uow, command.vacation_status_id, what="vacation_status_id")
        await known_service(uow, command.vacation_service_id, what="vacation_service_id")
        # The defaults (the account's current status and data service) are known already.
        if command.normal_status_id is not None:
            await known_status(uow, command.normal_status_id, what="normal_status_id")
        if command.normal_service_id is not None:
            await known_service(uow, command.normal_service_id, what="normal_service_id")
        leave_at, leave_reading = rules.resolve_run_at(command.leave_at, command.time_zone)
        return_at, return_reading = rules.resolve_run_at(command.return_at, command.time_zone)
        # How the dates were read is said once, on the vacation's first event.
        reading = leave_reading + return_reading
        normal_status_id = command.normal_status_id or account.status_id
        normal_service_id = command.normal_service_id or await _current_data_service(
            uow, command.account_id
        )
        plan = rules.vacation_plan(
            leave_at=leave_at,
            return_at=return_at,
            vacation_status_id=command.vacation_status_id,
            vacation_service_id=command.vacation_service_id,
            normal_status_id=normal_status_id,
            normal_service_id=normal_service_id,
            now=now,
        )
        vacation = Vacation(
            id=uuid4(),
            account_id=command.account_id,
            leave_at=leave_at,
            return_at=return_at,
            time_zone=command.time_zone,
            vacation_status_id=command.vacation_status_id,
            vacation_service_id=command.vacation_service_id,
            normal_status_id=normal_status_id,
            normal_service_id=normal_service_id,
            note=command.note,
            created_by=actor,
            created_at=now,
        )
        uow.session.add(vacation)
        await uow.session.flush()
        rows: list[ScheduledEvent] = []
        for step in plan:
            row = ScheduledEvent(
                id=uuid4(),
                account_id=command.account_id,
                action=step.action.value,
                parameters=rules.stored_parameters(step.parameters),
                run_at=step.run_at,
                sequence=step.sequence,
                time_zone=command.time_zone,
                state=State.PENDING.value,
                note=command.note,
                warnings=reading
                + await foresee(
                    uow,
                    command.account_id,
                    step.action,
                    step.parameters,
                    step.run_at,
                    step.sequence,
                ),
                vacation_id=vacation.id,
                created_by=actor,
                created_at=now,
                updated_at=now,
                outcome={},
            )
            reading = []
            uow.session.add(row)
            await uow.session.flush()
            await uow.emit(created_event(row), subject=row.account_id)
            rows.append(row)
        log.info("vacation_planned", vacation_id=str(vacation.id), events=len(rows))
        return vacation, rows


async def vacation_events(uow: UnitOfWork, vacation_id: UUID) -> list[ScheduledEvent]:
    """The vacation's linked events, in the order they run."""
    return list(
        await uow.session.scalars(
            select(ScheduledEvent)
            .where(ScheduledEvent.vacation_id == vacation_id)
            .order_by(ScheduledEvent.run_at, ScheduledEvent.sequence)
        )
    )


async def get_vacation(uow: UnitOfWork, vacation_id: UUID) -> Vacation:
    """The vacation, or 404."""
    return await uow.get(Vacation, vacation_id, not_found=f"vacation {vacation_id} not found")


async def replan_vacation(
    uow: UnitOfWork,
    vacation_id: UUID,
    change: ReplanVacation,
    *,
    actor: str,
    now: datetime | None = None,
) -> tuple[Vacation, list[ScheduledEvent]]:
    """Move a vacation's leave or return date (a customer back early, or staying longer).

    A date can move only while its events are all pending; the return stays after the leave.
    """
    now = now or clock.now()
    async with uow:
        vacation = await get_vacation(uow, vacation_id)
        if vacation.cancelled_at is not None:
            raise Conflict(f"vacation {vacation_id} is cancelled")
        statement = select(ScheduledEvent).where(ScheduledEvent.vacation_id == vacation_id)
        if not uow.db.is_sqlite:
            statement = statement.with_for_update()
        rows = list((await uow.session.scalars(statement)).all())
        zone = change.time_zone if change.time_zone is not None else vacation.time_zone
        if change.time_zone is not None:
            rules.time_zone(change.time_zone)
        leave_at, return_at = vacation.leave_at, vacation.return_at
        # Which events belong to which date is decided before anything moves.
        moves: list[tuple[str, datetime, datetime, list[ScheduledEvent]]] = []
        if change.leave_at is not None:
            leave_at, _ = rules.resolve_run_at(change.leave_at, zone)
            on_leave = [r for r in rows if r.run_at == vacation.leave_at]
            moves.append(("leave", vacation.leave_at, leave_at, on_leave))
        if change.return_at is not None:
            return_at, _ = rules.resolve_run_at(change.return_at, zone)
            on_return = [r for r in rows if r.run_at == vacation.return_at]
            moves.append(("return", vacation.return_at, return_at, on_return))
        if return_at <= leave_at:
            raise InvalidInput(
                f"the return ({return_at.isoformat()}) must be after the leave "
                f"({leave_at.isoformat()})"
            )
        for which, old, new, moved in moves:
            if new == old:
                continue
            rules.ensure_future(new, now)
            for row in moved:
                if row.state != State.PENDING.value:
                    raise Conflict(
                        f"the {which} of vacation {vacation_id} has already run (event "
                        f"{row.id} is {row.state}); its date can no longer change"
                    )
                row.run_at = new
                row.updated_at = now
        vacation.leave_at, vacation.return_at, vacation.time_zone = leave_at, return_at, zone
        await uow.session.flush()
        for row in rows:
            if row.state == State.PENDING.value:
                action = Action(row.action)
                row.warnings = await foresee(
                    uow,
                    row.account_id,
                    action,
                    rules.parse_parameters(action, row.parameters),
                    row.run_at,
                    row.sequence,
                    exclude=row.id,
                )
        log.info("vacation_replanned", vacation_id=str(vacation_id), by=actor)
        return vacation, sorted(rows, key=lambda r: (r.run_at, r.sequence))


async def cancel_vacation(
    uow: UnitOfWork, vacation_id: UUID, *, actor: str, now: datetime | None = None
) -> tuple[Vacation, list[ScheduledEvent]]:
    """Cancel a vacation as one: all of its events, as long as none has fired yet."""
    now = now or clock.now()
    async with uow:
        vacation = await get_vacation(uow, vacation_id)
        if vacation.cancelled_at is not None:
            raise Conflict(f"vacation {vacation_id} is already cancelled")
        statement = select(ScheduledEvent).where(ScheduledEvent.vacation_id == vacation_id)
        if not uow.db.is_sqlite:
            statement = statement.with_for_update()
        rows = sorted(
            (await uow.session.scalars(statement)).all(), key=lambda r: (r.run_at, r.sequence)
        )
        fired = [r for r in rows if r.state != State.PENDING.value]
        if fired:
            raise Conflict(
                f"vacation {vacation_id} has already started (event {fired[0].id} is "
                f"{fired[0].state}); it can no longer be cancelled as a whole"
            )
        for row in rows:
            await uow.emit(cancel_row(row, actor, now), subject=row.account_id)
        vacation.cancelled_at = now
        return vacation, rows
