"""Firing and its outcomes on the scheduler's own database, the test being the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from backhaul_contracts import Envelope, Event
from backhaul_contracts.common import StatusRef
from backhaul_contracts.events.outcomes import CommandFailed, CommandSucceeded, FailureCode
from backhaul_kit.testing import Handlers
from scheduler.adapters.tables import ScheduledEvent
from scheduler.domain.rules import Action, State
from scheduler.service_layer import firing, outcomes, scheduled_events

from .replica_events import OtherServices

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DUE = T0 + timedelta(hours=1)


async def fired_status_change(handlers: Handlers, others: OtherServices, account_id: int):
    """A status change scheduled at T0 for DUE, and fired at DUE: (its row, its command)."""
    await others.account_created(account_id)
    await others.status_defined(StatusRef(id=3, name="Inactive", activates_account=False))
    row, _ = await handlers.call(
        scheduled_events.schedule,
        scheduled_events.Schedule(
            account_id=account_id,
            action=Action.CHANGE_STATUS,
            run_at=DUE,
            parameters={"status_id": 3},
        ),
        actor="staff",
        now=T0,
    )
    claimed, (command,) = await handlers.call(firing.fire_due, batch_size=10, now=DUE)
    assert claimed == 1
    return row, command


async def state_of(handlers: Handlers, event_id: UUID) -> ScheduledEvent:
    row, _ = await handlers.call(scheduled_events.get_event, event_id)
    return row


async def answer(handlers: Handlers, handler, outcome: Event, command: Envelope) -> list[Envelope]:
    """The owner's answer to `command`, as the consumer would hand it to `handler`."""
    envelope = Envelope.wrap(
        outcome, producer="accounts", subject=command.subject, causation_id=command.event_id
    )
    async with handlers.uow() as uow:  # the consumer's open unit of work
        await handler(outcome, envelope, uow)
    return list(uow.emitted)


async def test_firing_sends_the_command_once_and_marks_the_event_dispatched(handlers, others):
    claimed, emitted = await handlers.call(firing.fire_due, batch_size=10, now=T0)
    assert (claimed, emitted) == (0, [])

    row, command = await fired_status_change(handlers, others, 601)
    assert command.event_type == "ChangeAccountStatus"
    assert command.payload["status_id"] == 3 and command.subject == "601"
    # The command's id is the scheduled event's: the outbox refuses a second one.
    assert command.event_id == row.id
    fired = await state_of(handlers, row.id)
    assert (fired.state, fired.dispatched_at, fired.command_event_id) == (
        State.DISPATCHED.value,
        DUE,
        row.id,
    )
    assert await handlers.call(firing.fire_due, batch_size=10, now=DUE) == (0, [])


async def test_the_owners_success_completes_the_event(handlers, others):
    row, command = await fired_status_change(handlers, others, 602)
    success = CommandSucceeded(
        account_id=602, command_type="ChangeAccountStatus", result={"status_id": 3}
    )
    (completed,) = await answer(handlers, outcomes.on_command_succeeded, success, command)
    assert completed.event_type == "ScheduledEventCompleted"
    assert completed.payload["result"] == {"status_id": 3}
    done = await state_of(handlers, row.id)
    assert (done.state, done.outcome, done.failure_reason) == (
        State.COMPLETED.value,
        {"status_id": 3},
        None,
    )


async def test_the_owners_refusal_fails_the_event_with_its_reason(handlers, others):
    row, command = await fired_status_change(handlers, others, 603)
    refusal = CommandFailed(
        account_id=603,
        command_type="ChangeAccountStatus",
        reason="account 603 is disconnected",
        code=FailureCode.CONFLICT,
    )
    (failed,) = await answer(handlers, outcomes.on_command_failed, refusal, command)
    assert failed.event_type == "ScheduledEventFailed"
    assert failed.payload["reason"] == "account 603 is disconnected"
    done = await state_of(handlers, row.id)
    assert (done.state, done.failure_code, done.failure_reason) == (
        State.FAILED.value,
        "conflict",
        "account 603 is disconnected",
    )


async def test_an_answer_to_someone_elses_command_changes_nothing(handlers, others):
    row, command = await fired_status_change(handlers, others, 604)
    stray = command.model_copy(update={"event_id": uuid4()})
    success = CommandSucceeded(account_id=604, command_type="ChangeAccountStatus")
    assert await answer(handlers, outcomes.on_command_succeeded, success, stray) == []
    assert (await state_of(handlers, row.id)).state == State.DISPATCHED.value
