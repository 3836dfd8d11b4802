"""Accounts against a real database (SQLite and PostgreSQL) and a real Kafka broker."""

from datetime import datetime
from uuid import uuid4

import pytest
from sqlalchemy import func, select

from backhaul_contracts import Envelope
from backhaul_contracts.common import ReleasedIp
from backhaul_contracts.events.accounts import DisconnectAccount
from backhaul_contracts.events.billing import InvoiceIssued
from backhaul_contracts.events.provisioning import AccountNetworkReleased
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.messaging.tables import inbox_messages, outbox_messages
from backhaul_kit.testing import eventually, read_events

pytestmark = pytest.mark.integration

# A fresh database first publishes the default statuses (Lead, Active, Inactive).
DEFAULT_STATUS_EVENTS = 3

ADDRESS = {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}
CONTACT = {"name": "Ada Lovelace", "email": "ada@example.com"}


async def _create(client, **extra):
    body = {
        "name": "Ada",
        "status_id": 2,
        "serviceable_address": ADDRESS,
        "primary_contact": CONTACT,
        **extra,
    }
    response = await client.post("/accounts", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_fresh_install_has_the_default_statuses(service):
    _, client = service
    statuses = (await client.get("/account-statuses")).json()
    assert [(s["name"], s["activates_account"]) for s in statuses] == [
        ("Lead", False),
        ("Active", True),
        ("Inactive", False),
    ]


async def test_disconnect_moves_status_frees_address_logs_and_publishes(
    service, kafka_bootstrap, settings
):
    _, client = service
    account = await _create(client)
    assert account["serviceable_address"]["line1"] == "1 Main St"
    assert datetime.fromisoformat(account["created_at"]).tzinfo is not None  # SQLite too
    assert account["activated_at"] is not None

    response = await client.post(
        f"/accounts/{account['id']}/disconnect",
        json={"proration": "credit_unused"},
    )
    assert response.status_code == 201, response.text
    disconnection = response.json()
    assert disconnection["progress"] == "in_progress"
    assert {s["step"]: s["state"] for s in disconnection["steps"]} == {
        "final_invoice": "pending",
        "network_release": "pending",
        "email": "pending",
    }
    assert disconnection["address"]["line1"] == "1 Main St"
    assert disconnection["disconnected_by"] == "staff@isp"

    after = (await client.get(f"/accounts/{account['id']}")).json()
    assert after["status"]["name"] == "Inactive"
    assert after["serviceable_address"] is None
    assert after["disconnected_at"] is not None

    # The address is free again for a new account.
    await _create(client, name="Next tenant")

    events = await read_events(
        kafka_bootstrap, settings.topic(ACCOUNTS_EVENTS), count=DEFAULT_STATUS_EVENTS + 4
    )
    disconnected = [e for e in events if e.event_type == "AccountDisconnected"]
    assert len(disconnected) == 1
    payload = disconnected[0].payload
    assert payload["disconnection_id"] == disconnection["id"]
    assert payload["previous_status"] == {"id": 2, "name": "Active", "activates_account": True}
    assert payload["status"]["name"] == "Inactive"
    assert payload["proration"] == "credit_unused"
    assert payload["primary_contact"]["email"] == "ada@example.com"
    assert disconnected[0].subject == str(account["id"])

    logs = (await client.get(f"/accounts/{account['id']}/logs")).json()
    assert [entry["action"] for entry in logs] == ["account_disconnected", "account_created"]
    assert logs[0]["actor"] == "staff@isp"


async def test_second_disconnect_is_409_and_changes_nothing(service):
    runtime, client = service
    account = await _create(client)
    assert (await client.post(f"/accounts/{account['id']}/disconnect")).status_code == 201
    async with runtime.db.transaction() as session:
        before = await session.scalar(select(func.count()).select_from(outbox_messages))

    again = await client.post(f"/accounts/{account['id']}/disconnect")

    assert again.status_code == 409
    assert "already disconnected" in again.json()["message"]
    async with runtime.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(outbox_messages)) == before
    assert len((await client.get(f"/accounts/{account['id']}/disconnections")).json()) == 1


async def test_bad_input_is_a_clear_4xx(service):
    _, client = service
    assert (await client.post("/accounts/999/disconnect")).status_code == 404
    huge = await client.get(f"/accounts/{2**70}")
    assert huge.status_code == 422 and "out of range" in huge.json()["message"]
    assert (await client.get("/accounts/999")).json()["message"] == "account 999 not found"

    invalid = await client.post(
        "/accounts", json={"name": "", "primary_contact": {"name": "x", "email": "nope"}}
    )
    assert invalid.status_code == 422
    fields = {d["field"] for d in invalid.json()["detail"]}
    assert {"name", "primary_contact.email"} <= fields

    await _create(client, id=500)
    taken = await client.post("/accounts", json={"id": 500, "name": "B"})
    assert taken.status_code == 409 and "500" in taken.json()["message"]

    occupied = await client.post("/accounts", json={"name": "C", "serviceable_address": ADDRESS})
    assert occupied.status_code == 409 and "occupied" in occupied.json()["message"]

    colour = await client.post(
        "/account-statuses", json={"name": "X", "activates_account": True, "colour": "bright"}
    )
    assert colour.status_code == 422 and "colour" in colour.json()["message"]


async def test_status_change_to_the_same_status_is_a_no_op(service):
    runtime, client = service
    account = await _create(client)
    async with runtime.db.transaction() as session:
        before = await session.scalar(select(func.count()).select_from(outbox_messages))
    same = await client.post(f"/accounts/{account['id']}/status", json={"status_id": 2})
    assert same.status_code == 200
    async with runtime.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(outbox_messages)) == before

    moved = await client.post(
        f"/accounts/{account['id']}/status", json={"status_id": 1, "reason": "test"}
    )
    assert moved.json()["status"]["name"] == "Lead"


async def test_progress_follows_completion_events_once_each(service):
    runtime, client = service
    account = await _create(client)
    disconnection = (await client.post(f"/accounts/{account['id']}/disconnect")).json()
    invoice = Envelope.wrap(
        InvoiceIssued(
            account_id=account["id"],
            invoice_id=41,
            number="INV-41",
            total="10.00",
            currency="USD",
            issued_at="2026-11-22T00:00:00Z",
            due_date="2026-12-01",
            final=True,
            disconnection_id=disconnection["id"],
        ),
        producer="billing",
        subject=account["id"],
    )
    record = Record(topic="billing.events.v1", value=invoice.to_bytes())

    assert await runtime.consumer.process(record) is Outcome.HANDLED
    assert await runtime.consumer.process(record) is Outcome.DUPLICATE

    released = Envelope.wrap(
        AccountNetworkReleased(
            account_id=account["id"],
            disconnection_id=disconnection["id"],
            released_at="2026-11-22T00:00:00Z",
            released_ips=[ReleasedIp(assignment_id=uuid4(), address="10.0.0.5")],
        ),
        producer="provisioning",
        subject=account["id"],
    )
    await runtime.consumer.process(
        Record(topic="provisioning.events.v1", value=released.to_bytes())
    )

    progress = (await client.get(f"/accounts/{account['id']}/disconnections")).json()[0]
    steps = {s["step"]: s for s in progress["steps"]}
    assert steps["final_invoice"]["state"] == "done"
    assert steps["final_invoice"]["result"]["invoice_id"] == 41
    assert steps["network_release"]["result"]["released_ips"] == ["10.0.0.5"]
    assert steps["email"]["state"] == "pending"
    assert progress["progress"] == "in_progress"
    async with runtime.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(inbox_messages)) == 2


async def test_scheduler_disconnect_command_over_kafka_is_answered(
    service, kafka_bootstrap, settings
):
    """A DisconnectAccount command published on Kafka is handled and answered by its outcome."""
    runtime, client = service
    account = await _create(client)
    command = Envelope.wrap(
        DisconnectAccount(account_id=account["id"], requested_by="scheduler"),
        producer="scheduler",
        subject=account["id"],
    )
    await runtime.producer.send_and_wait(
        settings.topic("accounts.commands.v1"), command.to_bytes(), key=str(account["id"]).encode()
    )

    async def disconnected():
        body = (await client.get(f"/accounts/{account['id']}")).json()
        assert body["disconnected_at"] is not None
        return body

    await eventually(disconnected)
    events = await read_events(
        kafka_bootstrap, settings.topic(ACCOUNTS_EVENTS), count=DEFAULT_STATUS_EVENTS + 4
    )
    outcome = [e for e in events if e.event_type == "CommandSucceeded"]
    assert len(outcome) == 1 and outcome[0].causation_id == command.event_id
    assert outcome[0].payload["result"]["disconnection_id"]

    # A second command for the same account is refused and the refusal is answered.
    again = Envelope.wrap(
        DisconnectAccount(account_id=account["id"], requested_by="scheduler"),
        producer="scheduler",
        subject=account["id"],
    )
    await runtime.producer.send_and_wait(
        settings.topic("accounts.commands.v1"), again.to_bytes(), key=str(account["id"]).encode()
    )
    # AccountCreated, ContactChanged, AccountDisconnected, CommandSucceeded, CommandFailed
    events = await read_events(
        kafka_bootstrap, settings.topic(ACCOUNTS_EVENTS), count=DEFAULT_STATUS_EVENTS + 5
    )
    failed = [e for e in events if e.event_type == "CommandFailed"]
    assert failed and failed[0].causation_id == again.event_id
    assert failed[0].payload["code"] == "conflict"


async def test_health_readiness_and_metrics(service):
    _, client = service
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "kafka": "ok"}
    await client.get("/accounts/12345")
    metrics = (await client.get("/metrics")).text
    assert 'route="/accounts/{account_id}"' in metrics
    assert 'status="404"' in metrics
