"""The status catalogue on the wire: every status is announced, and every change published,
so other services (the scheduler) can keep a replica of it."""

import pytest
from sqlalchemy import select

from accounts.adapters.tables import Setting
from accounts.service_layer import statuses
from backhaul_contracts import Envelope
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.testing import read_events

pytestmark = pytest.mark.integration

CATALOGUE = ("AccountStatusDefined", "AccountStatusDeleted")


async def catalogue_events(runtime) -> list[Envelope]:
    """The status catalogue events in the outbox, in the order they were written."""
    async with runtime.db.transaction() as session:
        rows = await session.execute(
            select(outbox_messages.c.value)
            .where(outbox_messages.c.event_type.in_(CATALOGUE))
            .order_by(outbox_messages.c.id)
        )
        return [Envelope.model_validate_json(value) for (value,) in rows]


async def test_a_fresh_install_announces_the_default_statuses_once(
    service, kafka_bootstrap, settings
):
    runtime, _client = service
    published = await read_events(kafka_bootstrap, settings.topic(ACCOUNTS_EVENTS), count=3)
    defaults = sorted(
        (e for e in published if e.event_type == "AccountStatusDefined"),
        key=lambda e: e.payload["status_id"],
    )
    assert [
        (e.payload["status_id"], e.payload["name"], e.payload["activates_account"])
        for e in defaults
    ] == [(1, "Lead", False), (2, "Active", True), (3, "Inactive", False)]
    assert all(e.payload["is_default"] for e in defaults)
    assert [e.subject for e in defaults] == [
        "account-status:1",
        "account-status:2",
        "account-status:3",
    ]
    assert defaults[1].payload["icon"] == "check-circle"
    assert defaults[1].payload["colour"] == "#4CAF50"

    # A restart, or a second replica, announces nothing more.
    assert await statuses.announce_statuses(runtime.uow()) == 0
    assert len(await catalogue_events(runtime)) == 3


async def test_creating_editing_and_deleting_a_status_publish_it(service):
    runtime, client = service
    before = len(await catalogue_events(runtime))

    created = await client.post(
        "/account-statuses",
        json={"name": "Vacation", "activates_account": True, "icon": "sun", "colour": "teal"},
    )
    assert created.status_code == 201, created.text
    status_id = created.json()["id"]
    renamed = await client.patch(f"/account-statuses/{status_id}", json={"name": "Away"})
    assert renamed.status_code == 200
    unchanged = await client.patch(f"/account-statuses/{status_id}", json={"name": "Away"})
    assert unchanged.status_code == 200  # nothing changed: nothing published
    taken = await client.post(
        "/account-statuses", json={"name": "Away", "activates_account": False}
    )
    assert taken.status_code == 409  # refused: nothing published
    assert (await client.delete(f"/account-statuses/{status_id}")).status_code == 204

    events = (await catalogue_events(runtime))[before:]
    assert [(e.event_type, e.payload["name"]) for e in events] == [
        ("AccountStatusDefined", "Vacation"),
        ("AccountStatusDefined", "Away"),
        ("AccountStatusDeleted", "Away"),
    ]
    assert {e.subject for e in events} == {f"account-status:{status_id}"}
    assert events[0].payload["activates_account"] is True
    assert events[0].payload["colour"] == "teal"  # as stored
    assert events[0].payload["is_default"] is False


async def test_restyling_a_default_and_installing_the_suggested_set_publish_them(service):
    runtime, client = service
    before = len(await catalogue_events(runtime))
    assert (await client.patch("/account-statuses/1", json={"colour": "#abc"})).status_code == 200
    installed = (await client.post("/account-statuses/suggested")).json()

    events = (await catalogue_events(runtime))[before:]
    assert (events[0].payload["status_id"], events[0].payload["colour"]) == (1, "#AABBCC")
    assert {e.payload["status_id"] for e in events[1:]} == {s["id"] for s in installed}
    assert {e.event_type for e in events} == {"AccountStatusDefined"}


async def test_a_database_older_than_the_catalogue_events_announces_every_status(service):
    runtime, client = service
    custom = await client.post(
        "/account-statuses", json={"name": "Collections", "activates_account": False}
    )
    assert custom.status_code == 201
    # As if this database had been written by a version without the announcement.
    async with runtime.uow() as uow:
        await uow.session.delete(
            await uow.session.get(Setting, statuses.CATALOGUE_ANNOUNCED_SETTING)
        )
    before = len(await catalogue_events(runtime))

    assert await statuses.announce_statuses(runtime.uow()) == 4
    announced = (await catalogue_events(runtime))[before:]
    assert [e.payload["name"] for e in announced] == ["Lead", "Active", "Inactive", "Collections"]
    assert await statuses.announce_statuses(runtime.uow()) == 0
