"""Outcomes: the owners' answers to the scheduler's commands complete or fail its events.

Event handlers: the consumer calls them inside its open unit of work (the inbox row, the
effect and the emitted events commit together, a batch at a time); they never enter it
again.
"""

from __future__ import annotations

import structlog
from sqlalchemy import select

from backhaul_contracts import Envelope
from backhaul_contracts.events import scheduler as events
from backhaul_contracts.events.outcomes import CommandFailed, CommandSucceeded
from backhaul_kit import clock
from backhaul_kit.unit_of_work import UnitOfWork
from scheduler.adapters.tables import ScheduledEvent
from scheduler.domain import rules
from scheduler.domain.rules import State
from scheduler.service_layer.scheduled_events import failed_event

log = structlog.get_logger(__name__)


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
    row = await _answered(uow, envelope)
    if row is None:
        return
    now = clock.now()
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
    row = await _answered(uow, envelope)
    if row is None:
        return
    now = clock.now()
    row.state = State.FAILED.value
    row.completed_at = now
    row.updated_at = now
    row.failure_reason = event.reason
    row.failure_code = event.code.value
    await uow.emit(failed_event(row, now), subject=row.account_id)
