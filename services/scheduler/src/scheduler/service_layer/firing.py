"""Firing: due events become their owners' commands, once; unanswered ones fail.

Called by the timer: each handler owns its unit of work (`async with uow:`), one
transaction per claim. Functions that depend on the time take `now` (default: the clock) so
tests can control it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import Row, func, select, update

from backhaul_contracts import Event
from backhaul_contracts.events import accounts as accounts_events
from backhaul_contracts.events import billing as billing_events
from backhaul_kit import clock
from backhaul_kit.errors import DomainError
from backhaul_kit.metrics import SCHEDULER_FIRING_LAG
from backhaul_kit.unit_of_work import UnitOfWork
from scheduler.adapters.tables import ScheduledEvent
from scheduler.domain import rules
from scheduler.domain.rules import Action, State
from scheduler.service_layer.scheduled_events import failed_event, get_event

log = structlog.get_logger(__name__)


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
    now = now or clock.now()
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
    await uow.emit(failed_event(row, now), subject=row.account_id)
    log.error("scheduled_event_unsendable", scheduled_event_id=str(row.id), reason=reason)


def _command_type(row: ScheduledEvent) -> str:
    return command_for(row.action, row.parameters, row.account_id, row.created_by).event_type


async def next_wake(uow: UnitOfWork, *, timeout: timedelta) -> datetime | None:
    """When the timer next has something to do: the earliest pending event's run time, or
    the earliest dispatched event's answer deadline; None if there is neither."""
    async with uow:
        due = await uow.session.scalar(
            select(func.min(ScheduledEvent.run_at)).where(
                ScheduledEvent.state == State.PENDING.value
            )
        )
        dispatched = await uow.session.scalar(
            select(func.min(ScheduledEvent.dispatched_at)).where(
                ScheduledEvent.state == State.DISPATCHED.value
            )
        )
    deadline = dispatched + timeout if dispatched is not None else None
    candidates = [t for t in (due, deadline) if t is not None]
    return min(candidates) if candidates else None


async def fail_unanswered(
    uow: UnitOfWork, *, timeout: timedelta, batch_size: int, now: datetime | None = None
) -> int:
    """Fail dispatched events whose owner has not answered within `timeout` ("no answer")."""
    now = now or clock.now()
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
            await uow.emit(failed_event(row, now), subject=row.account_id)
            log.warning("scheduled_event_unanswered", scheduled_event_id=str(row.id))
        return len(rows)
