"""The scheduler's handlers: one per command or event. Each owns its unit of work.

Functions that depend on the time take `now` (default: the wall clock) so tests can
control it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import structlog
from sqlalchemy import Row, and_, delete, or_, select, update

from backhaul_contracts import Envelope, Event
from backhaul_contracts.common import ServiceKind
from backhaul_contracts.events import accounts as accounts_events
from backhaul_contracts.events import billing as billing_events
from backhaul_contracts.events import scheduler as events
from backhaul_contracts.events.outcomes import CommandFailed, CommandSucceeded
from backhaul_kit.errors import Conflict, DomainError, InvalidInput, NotFound
from backhaul_kit.metrics import SCHEDULER_FIRING_LAG
from backhaul_kit.unit_of_work import UnitOfWork
from scheduler.adapters.tables import (
    KnownAccount,
    KnownAccountService,
    KnownService,
    KnownStatus,
    ScheduledEvent,
    Vacation,
)
from scheduler.domain import rules
from scheduler.domain.rules import Action, State

log = structlog.get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


# -- commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
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


@dataclass(frozen=True)
class PlanVacation:
    account_id: int
    leave_at: datetime
    return_at: datetime
    vacation_status_id: int
    vacation_service_id: int
    time_zone: str | None = None
    normal_status_id: int | None = None
    normal_service_id: int | None = None
    note: str | None = None


# -- lookups -------------------------------------------------------------------------------


async def _schedulable_account(uow: UnitOfWork, account_id: int) -> KnownAccount:
    account = await uow.session.get(KnownAccount, account_id)
    if account is None:
        raise NotFound(f"account {account_id} not found")
    if account.disconnected:
        raise Conflict(f"account {account_id} is disconnected; nothing can be scheduled on it")
    return account


async def _known_status(uow: UnitOfWork, status_id: int, *, what: str = "status_id") -> None:
    if await uow.session.get(KnownStatus, status_id) is None:
        raise InvalidInput(
            f"{what}: account status {status_id} does not exist (not in the catalogue accounts "
            "has published; GET /account-statuses on accounts lists the statuses)"
        )


async def _known_service(uow: UnitOfWork, service_id: int, *, what: str = "service_id") -> None:
    if await uow.session.get(KnownService, service_id) is None:
        raise InvalidInput(
            f"{what}: service {service_id} does not exist (not in the catalogue billing has "
            "published; GET /services on billing lists the services)"
        )


async def _ensure_catalogue_has(uow: UnitOfWork, parameters: rules.Parameters) -> None:
    """The status to move to, or the service to add, must exist (422 naming it otherwise).

    Known from the catalogue events of accounts and billing. A service to remove is not
    checked: that it will not be on the account is already a warning.
    """
    if isinstance(parameters, rules.ChangeStatusParameters):
        await _known_status(uow, parameters.status_id, what="parameters.status_id")
    elif isinstance(parameters, rules.AddServiceParameters):
        await _known_service(uow, parameters.service_id, what="parameters.service_id")


async def get_event(uow: UnitOfWork, event_id: UUID, *, for_update: bool = False) -> ScheduledEvent:
    statement = select(ScheduledEvent).where(ScheduledEvent.id == event_id)
    if for_update and not uow.db.is_sqlite:
        statement = statement.with_for_update()
    row = (await uow.session.execute(statement)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"scheduled event {event_id} not found")
    return row


async def _foresee(
    uow: UnitOfWork,
    account_id: int,
    action: Action,
    parameters: rules.Parameters,
    run_at: datetime,
    sequence: int,
    *,
    exclude: UUID | None = None,
) -> list[str]:
    """Warnings from what the scheduler knows: the account's services and what runs before."""
    session = uow.session
    before = [
        ScheduledEvent.account_id == account_id,
        ScheduledEvent.state.in_([State.PENDING.value, State.DISPATCHED.value]),
        or_(
            ScheduledEvent.run_at < run_at,
            and_(ScheduledEvent.run_at == run_at, ScheduledEvent.sequence <= sequence),
        ),
    ]
    if exclude is not None:
        before.append(ScheduledEvent.id != exclude)
    earlier = list(
        await session.scalars(
            select(ScheduledEvent)
            .where(*before)
            .order_by(ScheduledEvent.run_at, ScheduledEvent.sequence, ScheduledEvent.created_at)
        )
    )
    disconnect_at = next((e.run_at for e in earlier if e.action == Action.DISCONNECT.value), None)
    warnings = rules.foresee_disconnect(account_id, action, disconnect_at)
    if action is Action.DISCONNECT:
        warnings += rules.foresee_children(
            account_id, await _children_left_connected(uow, account_id)
        )
    if action not in (Action.ADD_SERVICE, Action.REMOVE_SERVICE):
        return warnings
    present = list(
        await session.scalars(
            select(KnownAccountService.service_id).where(
                KnownAccountService.account_id == account_id
            )
        )
    )
    planned = [
        rules.PlannedChange(Action(e.action), int(e.parameters["service_id"]))
        for e in earlier
        if e.action in (Action.ADD_SERVICE.value, Action.REMOVE_SERVICE.value)
    ]
    wanted = {*present, *(p.service_id for p in planned)}
    if isinstance(parameters, rules.AddServiceParameters | rules.RemoveServiceParameters):
        wanted.add(parameters.service_id)
    known = list(await session.scalars(select(KnownService).where(KnownService.id.in_(wanted))))
    return warnings + rules.foresee_failures(
        account_id=account_id,
        action=action,
        parameters=parameters,
        run_at=run_at,
        present=present,
        planned_before=planned,
        kinds={s.id: ServiceKind(s.kind) for s in known},
        names={s.id: s.name for s in known},
    )


async def _children_left_connected(uow: UnitOfWork, account_id: int) -> list[int]:
    """Child accounts neither disconnected nor with a disconnect of their own scheduled."""
    scheduled = select(ScheduledEvent.account_id).where(
        ScheduledEvent.action == Action.DISCONNECT.value,
        ScheduledEvent.state.in_([State.PENDING.value, State.DISPATCHED.value]),
    )
    return list(
        await uow.session.scalars(
            select(KnownAccount.id)
            .where(
                KnownAccount.parent_id == account_id,
                KnownAccount.disconnected.is_(False),
                KnownAccount.id.not_in(scheduled),
            )
            .order_by(KnownAccount.id)
        )
    )


def _created(row: ScheduledEvent) -> events.ScheduledEventCreated:
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


# -- scheduled events ----------------------------------------------------------------------


async def schedule(
    uow: UnitOfWork, command: Schedule, *, actor: str, now: datetime | None = None
) -> ScheduledEvent:
    """Schedule one action on an account; emit ScheduledEventCreated.

    Refuses an unknown or disconnected account, bad parameters (among them a status or a
    service to add that does not exist), a malformed time zone and a time in the past; warns
    when the event can already be seen to fail at its time.
    """
    now = now or _now()
    async with uow:
        await _schedulable_account(uow, command.account_id)
        parameters = rules.parse_parameters(command.action, command.parameters)
        await _ensure_catalogue_has(uow, parameters)
        run_at, warnings = rules.resolve_run_at(command.run_at, command.time_zone)
        rules.ensure_future(run_at, now)
        warnings += await _foresee(uow, command.account_id, command.action, parameters, run_at, 0)
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
        await uow.emit(_created(row), subject=row.account_id)
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
    now = now or _now()
    async with uow:
        row = await get_event(uow, event_id, for_update=True)
        rules.ensure_pending(State(row.state), row.id, "edited")
        if row.vacation_id is not None:
            raise Conflict(
                f"scheduled event {row.id} belongs to vacation {row.vacation_id}: "
                "change the vacation instead"
            )
        await _schedulable_account(uow, row.account_id)
        action = Action(row.action)
        raw = change.parameters if change.parameters is not None else row.parameters
        parameters = rules.parse_parameters(action, raw)
        if change.parameters is not None:
            # New parameters are checked like a new event's; unchanged ones were at creation.
            await _ensure_catalogue_has(uow, parameters)
        warnings: list[str] = []
        run_at = row.run_at
        zone = change.time_zone if change.time_zone is not None else row.time_zone
        if change.run_at is not None:
            run_at, warnings = rules.resolve_run_at(change.run_at, zone)
            rules.ensure_future(run_at, now)
        elif change.time_zone is not None:
            rules.time_zone(change.time_zone)
        warnings += await _foresee(
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


def _cancel_row(row: ScheduledEvent, actor: str, now: datetime) -> events.ScheduledEventCancelled:
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


async def cancel(
    uow: UnitOfWork, event_id: UUID, *, actor: str, now: datetime | None = None
) -> ScheduledEvent:
    """Cancel a pending event (409 once it has fired); emit ScheduledEventCancelled."""
    now = now or _now()
    async with uow:
        row = await get_event(uow, event_id, for_update=True)
        rules.ensure_pending(State(row.state), row.id, "cancelled")
        if row.vacation_id is not None:
            raise Conflict(
                f"scheduled event {row.id} belongs to vacation {row.vacation_id}: "
                "cancel the vacation instead"
            )
        await uow.emit(_cancel_row(row, actor, now), subject=row.account_id)
        return row


# -- vacations -----------------------------------------------------------------------------


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
    now = now or _now()
    async with uow:
        account = await _schedulable_account(uow, command.account_id)
        await _known_status(uow, command.vacation_status_id, what="vacation_status_id")
        await _known_service(uow, command.vacation_service_id, what="vacation_service_id")
        # The defaults (the account's current status and data service) are known already.
        if command.normal_status_id is not None:
            await _known_status(uow, command.normal_status_id, what="normal_status_id")
        if command.normal_service_id is not None:
            await _known_service(uow, command.normal_service_id, what="normal_service_id")
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
                + await _foresee(
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
            await uow.emit(_created(row), subject=row.account_id)
            rows.append(row)
        log.info("vacation_planned", vacation_id=str(vacation.id), events=len(rows))
        return vacation, rows


async def vacation_events(uow: UnitOfWork, vacation_id: UUID) -> list[ScheduledEvent]:
    return list(
        await uow.session.scalars(
            select(ScheduledEvent)
            .where(ScheduledEvent.vacation_id == vacation_id)
            .order_by(ScheduledEvent.run_at, ScheduledEvent.sequence)
        )
    )


async def get_vacation(uow: UnitOfWork, vacation_id: UUID) -> Vacation:
    return await uow.get(Vacation, vacation_id, not_found=f"vacation {vacation_id} not found")


@dataclass(frozen=True)
class ReplanVacation:
    """New dates for a vacation; None keeps a date as it is."""

    leave_at: datetime | None = None
    return_at: datetime | None = None
    time_zone: str | None = None


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
    now = now or _now()
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
                row.warnings = await _foresee(
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
    now = now or _now()
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
            await uow.emit(_cancel_row(row, actor, now), subject=row.account_id)
        vacation.cancelled_at = now
        return vacation, rows


# -- firing --------------------------------------------------------------------------------


def command_for(
    action: str, parameters: dict[str, Any], account_id: int, requested_by: str
) -> Event:
    """The command the owning service receives for a scheduled event."""
    parsed = rules.parse_parameters(Action(action), parameters)
    if isinstance(parsed, rules.DisconnectParameters):
        return accounts_events.DisconnectAccount(
            account_id=account_id, proration=parsed.proration, requested_by=requested_by
        )
    if isinstance(parsed, rules.ChangeStatusParameters):
        return accounts_events.ChangeAccountStatus(
            account_id=account_id,
            status_id=parsed.status_id,
            reason=parsed.reason,
            requested_by=requested_by,
        )
    if isinstance(parsed, rules.AddServiceParameters):
        return billing_events.AddAccountService(
            account_id=account_id,
            service_id=parsed.service_id,
            quantity=parsed.quantity,
            price_override=parsed.price_override,
            requested_by=requested_by,
        )
    return billing_events.RemoveAccountService(
        account_id=account_id, service_id=parsed.service_id, requested_by=requested_by
    )


async def _in_account_order(
    uow: UnitOfWork, claimed: list[Row[Any]], now: datetime
) -> list[Row[Any]]:
    """The claimed events that may fire now without overtaking an earlier event of their
    account that another replica holds (or a user is editing): per account, the prefix of
    its due events that this claim holds."""
    mine = {row.id for row in claimed}
    accounts = sorted({row.account_id for row in claimed})
    due = await uow.session.execute(
        select(ScheduledEvent.id, ScheduledEvent.account_id)
        .where(
            ScheduledEvent.state == State.PENDING.value,
            ScheduledEvent.run_at <= now,
            ScheduledEvent.account_id.in_(accounts),
        )
        .order_by(
            ScheduledEvent.account_id,
            ScheduledEvent.run_at,
            ScheduledEvent.sequence,
            ScheduledEvent.created_at,
            ScheduledEvent.id,
        )
    )
    allowed: set[UUID] = set()
    blocked: set[int] = set()
    for event_id, account_id in due:
        if account_id in blocked:
            continue
        if event_id in mine:
            allowed.add(event_id)
        else:
            blocked.add(account_id)
    return [row for row in claimed if row.id in allowed]


async def fire_due(uow: UnitOfWork, *, batch_size: int, now: datetime | None = None) -> int:
    """Claim due pending events, send their commands and mark them dispatched, all in one
    transaction; returns how many were claimed.

    PostgreSQL: rows are locked with SKIP LOCKED, so replicas never claim the same event.
    SQLite: the single writer (BEGIN IMMEDIATE) does the same job. Either way the command's
    event id is the scheduled event's id, so the outbox itself refuses a second command for
    the same event.
    """
    now = now or _now()
    async with uow:
        statement = (
            select(
                ScheduledEvent.id,
                ScheduledEvent.account_id,
                ScheduledEvent.action,
                ScheduledEvent.parameters,
                ScheduledEvent.run_at,
                ScheduledEvent.created_by,
            )
            .where(ScheduledEvent.state == State.PENDING.value, ScheduledEvent.run_at <= now)
            .order_by(
                ScheduledEvent.run_at,
                ScheduledEvent.sequence,
                ScheduledEvent.created_at,
                ScheduledEvent.id,
            )
            .limit(batch_size)
        )
        if not uow.db.is_sqlite:
            statement = statement.with_for_update(skip_locked=True)
        claimed = list((await uow.session.execute(statement)).all())
        if not claimed:
            return 0
        commands: list[tuple[Row[Any], Event]] = []
        for r in await _in_account_order(uow, claimed, now):
            try:
                commands.append(
                    (r, command_for(r.action, r.parameters, r.account_id, r.created_by))
                )
            except DomainError as error:
                # A row that can no longer be turned into a command (its parameters were
                # written by an older version) must not block the rest: it fails, saying why.
                await _fail_unsendable(uow, r.id, error.message, now)
        if not commands:
            return len(claimed)
        firing = [r for r, _ in commands]
        for r in firing:
            SCHEDULER_FIRING_LAG.labels("scheduler").observe(
                max((now - r.run_at).total_seconds(), 0.0)
            )
        await uow.emit_many(
            [(command, r.account_id) for r, command in commands],
            event_ids=[r.id for r in firing],
        )
        await uow.session.execute(
            update(ScheduledEvent)
            .where(ScheduledEvent.id.in_([r.id for r in firing]))
            .values(
                state=State.DISPATCHED.value,
                dispatched_at=now,
                updated_at=now,
                command_event_id=ScheduledEvent.id,
            )
            .execution_options(synchronize_session=False)
        )
        log.info(
            "scheduled_events_dispatched",
            count=len(firing),
            max_lag_ms=round(max(now - r.run_at for r in firing).total_seconds() * 1000),
        )
        return len(claimed)


async def _fail_unsendable(uow: UnitOfWork, event_id: UUID, reason: str, now: datetime) -> None:
    row = await get_event(uow, event_id)
    row.state = State.FAILED.value
    row.failure_code = "invalid"
    row.failure_reason = f"could not be sent: {reason}"
    row.completed_at = row.updated_at = now
    await uow.emit(_failed(row, now), subject=row.account_id)
    log.error("scheduled_event_unsendable", scheduled_event_id=str(row.id), reason=reason)


def _command_type(row: ScheduledEvent) -> str:
    return command_for(row.action, row.parameters, row.account_id, row.created_by).event_type


def _failed(row: ScheduledEvent, now: datetime) -> events.ScheduledEventFailed:
    return events.ScheduledEventFailed(
        scheduled_event_id=row.id,
        account_id=row.account_id,
        action=row.action,
        failed_at=now,
        reason=row.failure_reason or "",
        code=row.failure_code,
        vacation_id=row.vacation_id,
    )


async def fail_unanswered(
    uow: UnitOfWork, *, timeout: timedelta, batch_size: int, now: datetime | None = None
) -> int:
    """Fail dispatched events whose owner has not answered within `timeout` ("no answer")."""
    now = now or _now()
    async with uow:
        statement = (
            select(ScheduledEvent)
            .where(
                ScheduledEvent.state == State.DISPATCHED.value,
                ScheduledEvent.dispatched_at <= now - timeout,
            )
            .order_by(ScheduledEvent.dispatched_at)
            .limit(batch_size)
        )
        if not uow.db.is_sqlite:
            statement = statement.with_for_update(skip_locked=True)
        rows = list((await uow.session.scalars(statement)).all())
        for row in rows:
            row.state = State.FAILED.value
            row.failure_code = rules.NO_ANSWER
            row.failure_reason = (
                f"no answer to {_command_type(row)} within "
                f"{timeout.total_seconds():g} s of dispatch"
            )
            row.completed_at = now
            row.updated_at = now
            await uow.emit(_failed(row, now), subject=row.account_id)
            log.warning("scheduled_event_unanswered", scheduled_event_id=str(row.id))
        return len(rows)


# -- outcomes (the owners' answers) --------------------------------------------------------


async def _answered(uow: UnitOfWork, envelope: Envelope) -> ScheduledEvent | None:
    if envelope.causation_id is None:
        return None
    statement = select(ScheduledEvent).where(
        ScheduledEvent.command_event_id == envelope.causation_id
    )
    if not uow.db.is_sqlite:
        statement = statement.with_for_update()
    row = (await uow.session.execute(statement)).scalar_one_or_none()
    if row is None:
        return None  # a command someone else sent
    if not rules.accepts_answer(State(row.state), row.failure_code):
        log.info("scheduled_event_answer_ignored", scheduled_event_id=str(row.id), state=row.state)
        return None
    return row


async def on_command_succeeded(
    event: CommandSucceeded, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The owner did it: the scheduled event is completed with the ids it produced."""
    async with uow:
        row = await _answered(uow, envelope)
        if row is None:
            return
        now = _now()
        row.state = State.COMPLETED.value
        row.completed_at = now
        row.updated_at = now
        row.outcome = dict(event.result)
        row.failure_reason = row.failure_code = None
        await uow.emit(
            events.ScheduledEventCompleted(
                scheduled_event_id=row.id,
                account_id=row.account_id,
                action=row.action,
                completed_at=now,
                result=row.outcome,
                vacation_id=row.vacation_id,
            ),
            subject=row.account_id,
        )


async def on_command_failed(event: CommandFailed, envelope: Envelope, uow: UnitOfWork) -> None:
    """The owner refused: the scheduled event fails with the owner's reason."""
    async with uow:
        row = await _answered(uow, envelope)
        if row is None:
            return
        now = _now()
        row.state = State.FAILED.value
        row.completed_at = now
        row.updated_at = now
        row.failure_reason = event.reason
        row.failure_code = event.code.value
        await uow.emit(_failed(row, now), subject=row.account_id)


# -- replicas ------------------------------------------------------------------------------


async def on_account_created(
    event: accounts_events.AccountCreated, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Remember the account: events can now be scheduled on it."""
    async with uow:
        account = await uow.session.get(KnownAccount, event.account_id)
        if account is None:
            account = KnownAccount(id=event.account_id)
            uow.session.add(account)
        account.name = event.name
        account.status_id = event.status.id
        account.parent_id = event.parent_account_id
        account.disconnected = False
        account.updated_at = envelope.occurred_at


async def on_account_updated(
    event: accounts_events.AccountUpdated, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Follow the account's parent (a parent's disconnect does not reach its children)."""
    async with uow:
        account = await uow.session.get(KnownAccount, event.account_id)
        if account is None:
            return  # its AccountCreated comes first on the same partition; nothing to follow
        account.name = event.name
        account.parent_id = event.parent_account_id
        account.updated_at = envelope.occurred_at


async def on_account_status_changed(
    event: accounts_events.AccountStatusChanged, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Follow the account's status; an activating status brings a disconnected one back."""
    async with uow:
        account = await uow.session.get(KnownAccount, event.account_id)
        if account is None:
            # Created before the scheduler's log starts: the status change is enough to know it.
            account = KnownAccount(id=event.account_id, name="", disconnected=False)
            uow.session.add(account)
        account.status_id = event.status.id
        account.parent_id = event.parent_account_id
        if event.status.activates_account:
            account.disconnected = False
        account.updated_at = envelope.occurred_at


async def on_account_disconnected(
    event: accounts_events.AccountDisconnected, envelope: Envelope, uow: UnitOfWork
) -> None:
    """A disconnected account takes no new scheduled events."""
    async with uow:
        account = await uow.session.get(KnownAccount, event.account_id)
        if account is None:
            account = KnownAccount(id=event.account_id, name=event.account_name)
            uow.session.add(account)
        account.status_id = event.status.id
        account.parent_id = event.parent_account_id
        account.disconnected = True
        account.updated_at = envelope.occurred_at


async def on_account_status_defined(
    event: accounts_events.AccountStatusDefined, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Remember the status as it now is: events can now be scheduled to move to it."""
    async with uow:
        known = await uow.session.get(KnownStatus, event.status_id)
        if known is None:
            known = KnownStatus(id=event.status_id)
            uow.session.add(known)
        elif known.updated_at > envelope.occurred_at:
            return  # an older announcement, replayed: what we know is newer
        known.name = event.name
        known.activates_account = event.activates_account
        known.updated_at = envelope.occurred_at


async def on_account_status_deleted(
    event: accounts_events.AccountStatusDeleted, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Forget a deleted status: nothing new can be scheduled to move to it."""
    async with uow:
        await uow.session.execute(delete(KnownStatus).where(KnownStatus.id == event.status_id))


async def on_service_defined(
    event: billing_events.ServiceDefined, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Remember the catalogue service: it can now be scheduled for addition."""
    async with uow:
        await _know_service(uow, event.service_id, event.name, event.kind)


async def _know_service(uow: UnitOfWork, service_id: int, name: str, kind: str) -> None:
    known = await uow.session.get(KnownService, service_id)
    if known is None:
        uow.session.add(KnownService(id=service_id, name=name, kind=kind))
    else:
        known.name, known.kind = name, kind


async def on_account_service_added(
    event: billing_events.AccountServiceAdded, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Follow the account's services (a second data service would fail)."""
    async with uow:
        await _know_service(uow, event.service.service_id, event.service.name, event.service.kind)
        if await uow.session.get(KnownAccountService, event.account_service_id) is None:
            uow.session.add(
                KnownAccountService(
                    account_service_id=event.account_service_id,
                    account_id=event.account_id,
                    service_id=event.service.service_id,
                )
            )


async def on_account_service_removed(
    event: billing_events.AccountServiceRemoved, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Forget a service removed from the account."""
    async with uow:
        await _know_service(uow, event.service.service_id, event.service.name, event.service.kind)
        await uow.session.execute(
            delete(KnownAccountService).where(
                KnownAccountService.account_service_id == event.account_service_id
            )
        )
