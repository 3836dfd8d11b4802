"""Firing on a real database: the clock, "no answer", restarts, and replicas firing once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from sqlalchemy import func, insert, select

from backhaul_contracts import Envelope
from backhaul_contracts.events.outcomes import CommandSucceeded
from backhaul_contracts.topics import ACCOUNTS_COMMANDS, ACCOUNTS_EVENTS
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.testing import eventually, read_events
from scheduler.adapters.tables import KnownAccount, KnownStatus, ScheduledEvent
from scheduler.bootstrap import bootstrap
from scheduler.domain.rules import Action, State
from scheduler.service_layer import firing, outcomes, scheduled_events

pytestmark = pytest.mark.integration

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def idle(settings_without_bus):
    """The scheduler's database and handlers, with no timer running (and no broker): the
    test is the clock."""
    runtime = bootstrap(settings_without_bus)
    await asyncio.to_thread(runtime.migrate)
    try:
        yield runtime
    finally:
        await runtime.stop()


async def know_accounts(runtime, *account_ids: int) -> None:
    async with runtime.uow() as uow:
        for account_id in account_ids:
            uow.session.add(
                KnownAccount(id=account_id, name="", status_id=2, updated_at=datetime.now(UTC))
            )


async def know_statuses(runtime, *status_ids: int) -> None:
    """The status catalogue's replica, as AccountStatusDefined would have filled it."""
    async with runtime.uow() as uow:
        for status_id in status_ids:
            uow.session.add(
                KnownStatus(
                    id=status_id,
                    name=f"Status {status_id}",
                    activates_account=False,
                    updated_at=datetime.now(UTC),
                )
            )


async def state_of(runtime, event_id: UUID) -> ScheduledEvent:
    async with runtime.uow() as uow:
        return await scheduled_events.get_event(uow, event_id)


async def commands_in_outbox(runtime) -> list[Envelope]:
    async with runtime.db.transaction() as session:
        rows = await session.execute(
            select(outbox_messages.c.value)
            .where(outbox_messages.c.topic.like(f"%{ACCOUNTS_COMMANDS}"))
            .order_by(outbox_messages.c.id)
        )
        return [Envelope.model_validate_json(value) for (value,) in rows]


async def test_events_fire_when_the_clock_reaches_them_and_fail_without_an_answer(idle):
    await know_accounts(idle, 301)
    await know_statuses(idle, 3)
    event = await scheduled_events.schedule(
        idle.uow(),
        scheduled_events.Schedule(
            account_id=301,
            action=Action.CHANGE_STATUS,
            run_at=T0 + timedelta(hours=1),
            parameters={"status_id": 3},
        ),
        actor="staff",
        now=T0,
    )
    early = T0 + timedelta(minutes=59, seconds=59)
    assert await firing.fire_due(idle.uow(), batch_size=10, now=early) == 0
    assert (await state_of(idle, event.id)).state == State.PENDING

    due = T0 + timedelta(hours=1)
    assert await firing.fire_due(idle.uow(), batch_size=10, now=due) == 1
    assert await firing.fire_due(idle.uow(), batch_size=10, now=due) == 0  # fired once
    fired = await state_of(idle, event.id)
    assert fired.state == State.DISPATCHED
    assert fired.dispatched_at == due
    (command,) = await commands_in_outbox(idle)
    assert command.event_id == fired.command_event_id
    assert command.payload["status_id"] == 3

    timeout = timedelta(minutes=10)
    waited = due + timeout - timedelta(seconds=1)
    assert await firing.fail_unanswered(idle.uow(), timeout=timeout, batch_size=10, now=waited) == 0
    assert (
        await firing.fail_unanswered(idle.uow(), timeout=timeout, batch_size=10, now=due + timeout)
        == 1
    )
    failed = await state_of(idle, event.id)
    assert failed.state == State.FAILED
    assert failed.failure_code == "no_answer"
    assert "no answer to ChangeAccountStatus within 600 s" in (failed.failure_reason or "")

    # The answer arrives late after all: it is the truth, so it closes the event.
    answer = Envelope.wrap(
        CommandSucceeded(account_id=301, command_type="ChangeAccountStatus", result={"x": 1}),
        producer="accounts",
        subject=301,
        causation_id=command.event_id,
    )
    async with idle.uow() as uow:  # the consumer's open unit of work
        await outcomes.on_command_succeeded(
            CommandSucceeded.model_validate(answer.payload), answer, uow
        )
    closed = await state_of(idle, event.id)
    assert closed.state == State.COMPLETED
    assert closed.outcome == {"x": 1}
    assert closed.failure_reason is None


async def test_an_answer_to_someone_elses_command_changes_nothing(idle):
    await know_accounts(idle, 302)
    event = await scheduled_events.schedule(
        idle.uow(),
        scheduled_events.Schedule(
            account_id=302, action=Action.DISCONNECT, run_at=T0 + timedelta(1)
        ),
        actor="staff",
        now=T0,
    )
    await firing.fire_due(idle.uow(), batch_size=10, now=T0 + timedelta(1))
    stray = Envelope.wrap(
        CommandSucceeded(account_id=302, command_type="DisconnectAccount"),
        producer="accounts",
        subject=302,
        causation_id=uuid4(),
    )
    async with idle.uow() as uow:  # the consumer's open unit of work
        await outcomes.on_command_succeeded(
            CommandSucceeded.model_validate(stray.payload), stray, uow
        )
    assert (await state_of(idle, event.id)).state == State.DISPATCHED


async def test_events_missed_while_down_fire_on_restart_in_time_order_per_account(
    settings, kafka_bootstrap
):
    down = bootstrap(settings)
    await asyncio.to_thread(down.migrate)
    await know_accounts(down, 311, 312)
    await know_statuses(down, 1, 2, 3)
    now = datetime.now(UTC)
    # Created newest first, so creation order cannot pass for time order.
    for account_id in (311, 312):
        for step in (3, 1, 2):
            await scheduled_events.schedule(
                down.uow(),
                scheduled_events.Schedule(
                    account_id=account_id,
                    action=Action.CHANGE_STATUS,
                    run_at=now + timedelta(milliseconds=200 * step),
                    parameters={"status_id": step},
                ),
                actor="staff",
                now=now,
            )
    await down.stop()
    await asyncio.sleep(0.8)  # all are due while nothing runs

    back = bootstrap(settings)
    await asyncio.to_thread(back.migrate)
    await back.start_worker()
    try:
        commands = await read_events(
            kafka_bootstrap, settings.topic(ACCOUNTS_COMMANDS), count=6, timeout=30
        )
    finally:
        await back.stop()
    per_account = defaultdict(list)
    for command in commands:
        per_account[command.subject].append(command.payload["status_id"])
    assert per_account == {"311": [1, 2, 3], "312": [1, 2, 3]}


async def test_two_replicas_fire_each_of_1000_due_events_exactly_once(settings, kafka_bootstrap):
    """Two processes' worth of timers, three lanes each, claiming small batches: six loops
    race for the same rows, and each event still fires once and in order per account."""
    seeder = bootstrap(settings)
    await asyncio.to_thread(seeder.migrate)
    now = datetime.now(UTC)
    accounts = range(1000, 1100)
    rows = [
        {
            "id": uuid4(),
            "account_id": account_id,
            "action": Action.CHANGE_STATUS.value,
            "parameters": {"status_id": step + 1},
            # Due in the recent past, in time order per account.
            "run_at": now - timedelta(seconds=10) + timedelta(milliseconds=step),
            "sequence": 0,
            "state": State.PENDING.value,
            "warnings": [],
            "outcome": {},
            "created_by": "bulk",
            "created_at": now,
            "updated_at": now,
        }
        for account_id in accounts
        for step in range(10)
    ]
    async with seeder.uow() as uow:
        await uow.session.execute(insert(ScheduledEvent), rows)
    await seeder.stop()

    racing = settings.model_copy(update={"firing_batch_size": 50, "firing_lanes": 3})
    replicas = [bootstrap(racing) for _ in range(2)]
    await asyncio.gather(*(r.start_worker() for r in replicas))
    try:
        observer = bootstrap(settings)

        async def all_dispatched():
            async with observer.uow() as uow:
                left = await uow.session.scalar(
                    select(func.count())
                    .select_from(ScheduledEvent)
                    .where(ScheduledEvent.state == State.PENDING.value)
                )
            assert left == 0

        await eventually(all_dispatched, timeout=60)
        outbox = await commands_in_outbox(observer)
        async with observer.uow() as uow:
            fired = {
                event_id
                for (event_id,) in await uow.session.execute(
                    select(ScheduledEvent.command_event_id)
                )
            }
        await observer.stop()
        published = await read_events(
            kafka_bootstrap,
            settings.topic(ACCOUNTS_COMMANDS),
            count=1000,
            timeout=60,
            distinct=True,
        )
    finally:
        for replica in replicas:
            await replica.stop()

    # One command per event in the outbox, each the one its event remembers.
    assert len(outbox) == 1000
    assert {c.event_id for c in outbox} == fired
    # Kafka may redeliver under the relay's at-least-once rule, but never a second command
    # for the same event: distinct event ids are exactly the fired ones.
    assert {c.event_id for c in published} == fired
    per_account = defaultdict(list)
    for command in {c.event_id: c for c in published}.values():
        per_account[command.subject].append(command.payload["status_id"])
    assert all(steps == list(range(1, 11)) for steps in per_account.values()), per_account
    assert len(per_account) == 100


async def test_firing_outcomes_arrive_over_kafka_on_either_owners_topic(
    service, others, kafka_bootstrap, settings
):
    runtime, client = service
    await know_accounts(runtime, 321)
    event = await scheduled_events.schedule(
        runtime.uow(),
        scheduled_events.Schedule(
            account_id=321,
            action=Action.DISCONNECT,
            run_at=datetime.now(UTC) + timedelta(seconds=3),
            parameters={"proration": "none"},
        ),
        actor="staff",
    )
    (command,) = await read_events(
        kafka_bootstrap, settings.topic(ACCOUNTS_COMMANDS), count=1, timeout=60
    )
    assert command.payload["proration"] == "none"
    disconnection = str(uuid4())
    await others.publish(
        CommandSucceeded(
            account_id=321,
            command_type="DisconnectAccount",
            result={"disconnection_id": disconnection},
        ),
        321,
        topic=ACCOUNTS_EVENTS,
        causation_id=command.event_id,
    )

    async def completed():
        body = (await client.get(f"/scheduled-events/{event.id}")).json()
        assert body["state"] == "completed"
        return body

    assert (await eventually(completed, timeout=60))["outcome"] == {
        "disconnection_id": disconnection
    }


async def test_an_event_that_cannot_become_a_command_fails_without_blocking_the_others(idle):
    due = datetime.now(UTC) - timedelta(seconds=1)
    broken, fine = uuid4(), uuid4()
    async with idle.uow() as uow:
        await uow.session.execute(
            insert(ScheduledEvent),
            [
                {
                    "id": event_id,
                    "account_id": 331,
                    "action": Action.CHANGE_STATUS.value,
                    "parameters": parameters,
                    "run_at": due + timedelta(milliseconds=offset),
                    "sequence": 0,
                    "state": State.PENDING.value,
                    "warnings": [],
                    "outcome": {},
                    "created_by": "old version",
                    "created_at": due,
                    "updated_at": due,
                }
                for event_id, parameters, offset in (
                    (broken, {"status": "Active"}, 0),
                    (fine, {"status_id": 2}, 1),
                )
            ],
        )
    assert await firing.fire_due(idle.uow(), batch_size=10) == 2
    failed = await state_of(idle, broken)
    assert failed.state == State.FAILED
    assert failed.failure_code == "invalid"
    assert "parameters.status_id" in (failed.failure_reason or "")
    assert (await state_of(idle, fine)).state == State.DISPATCHED
