"""Issue 5: the status or service an event names must exist when it is scheduled.

The scheduler knows accounts' status catalogue and billing's service catalogue from their
events (AccountStatusDefined / AccountStatusDeleted, ServiceDefined, and the services seen
on accounts). Events are fed to the consumer as the broker would hand them over.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from backhaul_contracts import Envelope, Event
from backhaul_contracts.common import ServiceKind, StatusRef
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountStatusDefined,
    AccountStatusDeleted,
)
from backhaul_contracts.events.billing import ServiceDefined
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.messaging.tables import outbox_messages
from scheduler.adapters.tables import KnownService, KnownStatus, ScheduledEvent, Vacation

pytestmark = pytest.mark.integration


@pytest.fixture
def service(service_without_bus):
    """No broker: these tests feed the consumer themselves and call the API."""
    return service_without_bus


ACTIVE = StatusRef(id=2, name="Active", activates_account=True)


def soon(seconds: float = 3600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def feed(runtime, event: Event, subject: int | str, *, at: datetime | None = None) -> None:
    envelope = Envelope.wrap(event, producer="test", subject=subject)
    if at is not None:
        envelope = envelope.model_copy(update={"occurred_at": at})
    record = Record(topic=event.topic, value=envelope.to_bytes(), key=str(subject).encode())
    assert await runtime.consumer.process(record) is Outcome.HANDLED


async def account(runtime, account_id: int) -> None:
    await feed(
        runtime,
        AccountCreated(
            account_id=account_id,
            name=f"Account {account_id}",
            status=ACTIVE,
            created_at=datetime.now(UTC),
        ),
        account_id,
    )


def status_defined(status_id: int, name: str, activates: bool = False) -> AccountStatusDefined:
    return AccountStatusDefined(
        status_id=status_id,
        name=name,
        activates_account=activates,
        icon="circle",
        colour="#9E9E9E",
        defined_at=datetime.now(UTC),
    )


async def define_status(runtime, status_id: int, name: str, activates: bool = False) -> None:
    event = status_defined(status_id, name, activates)
    await feed(runtime, event, event.subject)


async def define_service(runtime, service_id: int, kind: ServiceKind) -> None:
    event = ServiceDefined(
        service_id=service_id,
        name=f"Service {service_id}",
        kind=kind,
        price=Decimal("30.00"),
        currency="USD",
        download_kbps=5_000 if kind is ServiceKind.DATA else None,
        upload_kbps=1_000 if kind is ServiceKind.DATA else None,
        defined_at=datetime.now(UTC),
    )
    await feed(runtime, event, event.subject)


async def nothing_created(runtime, account_id: int) -> None:
    async with runtime.uow() as uow:
        session = uow.session
        events = await session.scalar(
            select(func.count())
            .select_from(ScheduledEvent)
            .where(ScheduledEvent.account_id == account_id)
        )
        vacations = await session.scalar(
            select(func.count()).select_from(Vacation).where(Vacation.account_id == account_id)
        )
        created = await session.scalar(
            select(func.count())
            .select_from(outbox_messages)
            .where(
                outbox_messages.c.event_type == "ScheduledEventCreated",
                outbox_messages.c.key == str(account_id),
            )
        )
    assert (events, vacations, created) == (0, 0, 0)


async def refused(client, path: str, body: dict, words: list[str]) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    for word in words:
        assert word in message, message


async def test_a_status_change_to_an_unknown_status_is_refused_until_accounts_defines_it(
    service,
):
    runtime, client = service
    await account(runtime, 501)
    body = {
        "account_id": 501,
        "action": "change_status",
        "run_at": soon(),
        "parameters": {"status_id": 7},
    }
    await refused(client, "/scheduled-events", body, ["account status 7", "does not exist"])
    await nothing_created(runtime, 501)

    await define_status(runtime, 7, "Seasonal")
    created = await client.post("/scheduled-events", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["warnings"] == []

    # Deleted from accounts' catalogue: nothing new can be scheduled to move to it.
    deleted = AccountStatusDeleted(status_id=7, name="Seasonal", deleted_at=datetime.now(UTC))
    await feed(runtime, deleted, deleted.subject)
    await refused(client, "/scheduled-events", body, ["account status 7"])


async def test_an_unknown_account_is_still_a_404_before_its_parameters_are_looked_at(service):
    _, client = service
    response = await client.post(
        "/scheduled-events",
        json={
            "account_id": 502,
            "action": "change_status",
            "run_at": soon(),
            "parameters": {"status_id": 77},
        },
    )
    assert response.status_code == 404
    assert "account 502" in response.json()["message"]


async def test_a_service_to_add_must_be_in_the_catalogue_one_to_remove_is_only_warned(service):
    runtime, client = service
    await account(runtime, 503)
    add = {
        "account_id": 503,
        "action": "add_service",
        "run_at": soon(),
        "parameters": {"service_id": 11},
    }
    await refused(client, "/scheduled-events", add, ["service 11", "does not exist"])
    await nothing_created(runtime, 503)

    await define_service(runtime, 11, ServiceKind.DATA)
    assert (await client.post("/scheduled-events", json=add)).status_code == 201
    async with runtime.uow() as uow:
        known = await uow.session.get(KnownService, 11)
        assert known is not None and (known.name, known.kind) == ("Service 11", "data")

    removal = await client.post(
        "/scheduled-events",
        json={**add, "action": "remove_service", "parameters": {"service_id": 12}},
    )
    assert removal.status_code == 201, removal.text
    assert "will not be on account 503" in removal.json()["warnings"][0]


async def test_an_edit_to_an_unknown_status_is_refused_and_changes_nothing(service):
    runtime, client = service
    await account(runtime, 504)
    await define_status(runtime, 8, "Collections")
    created = await client.post(
        "/scheduled-events",
        json={
            "account_id": 504,
            "action": "change_status",
            "run_at": soon(),
            "parameters": {"status_id": 8},
        },
    )
    assert created.status_code == 201, created.text
    event_id = created.json()["id"]

    edit = await client.patch(
        f"/scheduled-events/{event_id}", json={"parameters": {"status_id": 9}}
    )
    assert edit.status_code == 422, edit.text
    assert "account status 9" in edit.json()["message"]
    after = (await client.get(f"/scheduled-events/{event_id}")).json()
    assert after["parameters"]["status_id"] == 8

    # A status deleted since creation does not stop the event's time or note from changing.
    deleted = AccountStatusDeleted(status_id=8, name="Collections", deleted_at=datetime.now(UTC))
    await feed(runtime, deleted, deleted.subject)
    moved = await client.patch(f"/scheduled-events/{event_id}", json={"note": "later"})
    assert moved.status_code == 200, moved.text


async def test_a_vacation_naming_an_unknown_status_or_service_creates_nothing(service):
    runtime, client = service
    await account(runtime, 505)
    await define_status(runtime, ACTIVE.id, ACTIVE.name, activates=True)
    await define_status(runtime, 9, "Vacation", activates=True)
    await define_service(runtime, 10, ServiceKind.DATA)
    await define_service(runtime, 11, ServiceKind.DATA)
    base = {
        "account_id": 505,
        "leave_at": soon(3600),
        "return_at": soon(7200),
        "vacation_status_id": 9,
        "vacation_service_id": 11,
        "normal_status_id": ACTIVE.id,
        "normal_service_id": 10,
    }
    for change, words in [
        ({"vacation_status_id": 19}, ["vacation_status_id", "account status 19"]),
        ({"vacation_service_id": 21}, ["vacation_service_id", "service 21"]),
        ({"normal_status_id": 29}, ["normal_status_id", "account status 29"]),
        ({"normal_service_id": 31}, ["normal_service_id", "service 31"]),
    ]:
        await refused(client, "/vacations", {**base, **change}, words)
    await nothing_created(runtime, 505)

    planned = await client.post("/vacations", json=base)
    assert planned.status_code == 201, planned.text


async def test_the_status_replica_keeps_the_latest_definition(service):
    runtime, _client = service
    renamed = status_defined(12, "Away", activates=True)
    await feed(runtime, renamed, renamed.subject)
    # The same status's older definition, delivered again late (a replay): it changes nothing.
    older = status_defined(12, "Vacation")
    await feed(runtime, older, older.subject, at=datetime.now(UTC) - timedelta(hours=1))
    async with runtime.uow() as uow:
        known = await uow.session.get(KnownStatus, 12)
        assert known is not None
        assert (known.name, known.activates_account) == ("Away", True)
