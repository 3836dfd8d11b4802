"""The service catalogue on the wire: every service is published, so other services (the
scheduler) can keep a replica of it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from backhaul_contracts import Envelope
from backhaul_contracts.topics import BILLING_EVENTS
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.testing import eventually, read_events
from billing.adapters.tables import Setting
from billing.service_layer import catalogue

pytestmark = pytest.mark.integration

FIBRE = {
    "name": "Fibre 100",
    "kind": "data",
    "price": "49.99",
    "currency": "usd",
    "download_kbps": 100_000,
    "upload_kbps": 20_000,
    "tax_rate": "0.0825",
}


async def defined(runtime) -> list[Envelope]:
    """The ServiceDefined events in the outbox, in the order they were written."""
    async with runtime.db.transaction() as session:
        rows = await session.execute(
            select(outbox_messages.c.value)
            .where(outbox_messages.c.event_type == "ServiceDefined")
            .order_by(outbox_messages.c.id)
        )
        return [Envelope.model_validate_json(value) for (value,) in rows]


async def announced(runtime) -> None:
    async with runtime.uow() as uow:
        assert await uow.session.get(Setting, catalogue.CATALOGUE_ANNOUNCED_SETTING) is not None


async def test_a_new_service_is_published_with_everything_a_replica_needs(
    service, settings, kafka_bootstrap
):
    _runtime, client = service
    response = await client.post("/services", json=FIBRE)
    assert response.status_code == 201, response.text
    fibre = response.json()

    published = await read_events(kafka_bootstrap, settings.topic(BILLING_EVENTS), count=1)
    [event] = [e for e in published if e.event_type == "ServiceDefined"]
    assert event.subject == f"service:{fibre['id']}"
    assert event.payload == {
        "service_id": fibre["id"],
        "name": "Fibre 100",
        "kind": "data",
        "price": "49.99",
        "currency": "USD",
        "download_kbps": 100_000,
        "upload_kbps": 20_000,
        "prorates": True,
        "tax_rate": "0.0825",
        "defined_at": event.payload["defined_at"],
    }


async def test_a_refused_service_publishes_nothing(local_service):
    runtime, client = local_service
    assert (await client.post("/services", json=FIBRE)).status_code == 201
    again = await client.post("/services", json=FIBRE)
    assert again.status_code == 409
    slow = await client.post("/services", json={**FIBRE, "name": "Slow", "upload_kbps": None})
    assert slow.status_code == 422
    assert [e.payload["name"] for e in await defined(runtime)] == ["Fibre 100"]


async def test_services_older_than_the_catalogue_events_are_announced_once(service):
    runtime, client = service
    await eventually(lambda: announced(runtime))  # the worker's start: nothing to announce yet
    assert await defined(runtime) == []
    for name in ("TV", "Phone"):
        body = {"name": name, "kind": "recurring", "price": "10.00"}
        assert (await client.post("/services", json=body)).status_code == 201
    # As if this database had been written by a version without the announcement.
    async with runtime.uow() as uow:
        await uow.session.delete(
            await uow.session.get(Setting, catalogue.CATALOGUE_ANNOUNCED_SETTING)
        )

    assert await catalogue.announce_services(runtime.uow()) == 2
    assert [e.payload["name"] for e in await defined(runtime)] == ["TV", "Phone", "TV", "Phone"]
    assert await catalogue.announce_services(runtime.uow()) == 0  # once per database
    assert len(await defined(runtime)) == 4
