"""Scheduling's rules on the scheduler's own database: what it refuses, and what it warns of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from backhaul_contracts.common import ServiceKind, StatusRef
from backhaul_kit.errors import Conflict, InvalidInput, NotFound
from backhaul_kit.testing import Handlers
from scheduler.adapters.tables import ScheduledEvent
from scheduler.domain.rules import Action, State
from scheduler.service_layer import scheduled_events, vacations
from scheduler.service_layer.scheduled_events import Schedule

from .replica_events import ACTIVE

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=1)
SEASONAL = StatusRef(id=7, name="Seasonal", activates_account=False)


async def schedule(handlers: Handlers, **fields):
    command = Schedule(**{"run_at": LATER, **fields})
    return await handlers.call(scheduled_events.schedule, command, actor="staff", now=T0)


async def events_of(handlers: Handlers, account_id: int) -> int:
    async with handlers.uow() as uow:
        count = await uow.session.scalar(
            select(func.count())
            .select_from(ScheduledEvent)
            .where(ScheduledEvent.account_id == account_id)
        )
    return int(count or 0)


async def test_an_unknown_status_is_refused_until_accounts_defines_it(handlers, others):
    await others.account_created(501)
    change = {"account_id": 501, "action": Action.CHANGE_STATUS, "parameters": {"status_id": 7}}
    with pytest.raises(InvalidInput, match=r"parameters\.status_id: account status 7") as refused:
        await schedule(handlers, **change)
    assert refused.value.status_code == 422
    assert await events_of(handlers, 501) == 0

    await others.status_defined(SEASONAL)
    row, emitted = await schedule(handlers, **change)
    assert (row.state, row.run_at, row.warnings) == (State.PENDING.value, LATER, [])
    (created,) = emitted
    assert created.event_type == "ScheduledEventCreated"
    assert created.payload["scheduled_event_id"] == str(row.id)


async def test_an_unknown_service_to_add_is_refused_one_to_remove_is_only_warned(handlers, others):
    await others.account_created(502)
    add = {"account_id": 502, "action": Action.ADD_SERVICE, "parameters": {"service_id": 11}}
    with pytest.raises(InvalidInput, match=r"parameters\.service_id: service 11 does not exist"):
        await schedule(handlers, **add)
    assert await events_of(handlers, 502) == 0

    await others.service_defined(11, ServiceKind.DATA)
    row, _ = await schedule(handlers, **add)
    assert row.warnings == []
    removal, _ = await schedule(
        handlers, account_id=502, action=Action.REMOVE_SERVICE, parameters={"service_id": 12}
    )
    assert "will not be on account 502" in removal.warnings[0]


async def test_an_unknown_or_disconnected_account_takes_nothing(handlers, others):
    disconnect = {"action": Action.DISCONNECT}
    with pytest.raises(NotFound, match="account 503 not found"):
        await schedule(handlers, account_id=503, **disconnect)
    await others.account_created(503)
    await others.account_disconnected(503)
    with pytest.raises(Conflict, match="account 503 is disconnected"):
        await schedule(handlers, account_id=503, **disconnect)


async def test_an_edit_to_an_unknown_status_is_refused_and_changes_nothing(handlers, others):
    await others.account_created(504)
    await others.status_defined(SEASONAL)
    row, _ = await schedule(
        handlers, account_id=504, action=Action.CHANGE_STATUS, parameters={"status_id": 7}
    )
    edit = scheduled_events.Reschedule(parameters={"status_id": 9})
    with pytest.raises(InvalidInput, match="account status 9"):
        await handlers.call(scheduled_events.reschedule, row.id, edit, actor="staff", now=T0)
    kept, _ = await handlers.call(scheduled_events.get_event, row.id)
    assert kept.parameters["status_id"] == 7


async def test_adding_a_data_service_while_one_is_present_is_warned(handlers, others):
    await others.account_created(505)
    await others.service_added(505, account_service_id=900, service_id=10, kind=ServiceKind.DATA)
    await others.service_defined(12, ServiceKind.DATA)
    add = {"account_id": 505, "action": Action.ADD_SERVICE, "parameters": {"service_id": 12}}

    row, emitted = await schedule(handlers, **add)
    (warning,) = row.warnings
    assert "will still have data service 'Service 10' (10)" in warning
    assert "adding data service 'Service 12' (12) will fail" in warning
    assert emitted[0].payload["warnings"] == row.warnings

    # With the present one's removal scheduled before, the addition can succeed.
    await schedule(
        handlers,
        account_id=505,
        action=Action.REMOVE_SERVICE,
        parameters={"service_id": 10},
        run_at=LATER - timedelta(hours=1),
    )
    after_removal, _ = await schedule(handlers, **add)
    assert after_removal.warnings == []


async def test_a_vacation_naming_an_unknown_status_creates_nothing(handlers, others):
    await others.account_created(506)
    await others.status_defined(ACTIVE)
    await others.service_defined(10, ServiceKind.DATA)
    plan = vacations.PlanVacation(
        account_id=506,
        leave_at=LATER,
        return_at=LATER + timedelta(days=7),
        vacation_status_id=19,
        vacation_service_id=10,
    )
    with pytest.raises(InvalidInput, match="vacation_status_id: account status 19"):
        await handlers.call(vacations.plan_vacation, plan, actor="staff", now=T0)
    assert await events_of(handlers, 506) == 0
