"""Billing against a real database (SQLite and PostgreSQL) and a real Kafka broker."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer

from backhaul_contracts import Envelope, Event
from backhaul_contracts.common import Proration, StatusRef
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
)
from backhaul_contracts.events.billing import AddAccountService, RemoveAccountService
from backhaul_contracts.topics import BILLING_EVENTS
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.testing import eventually, read_events
from billing.domain import rules

pytestmark = pytest.mark.integration

LEAD = StatusRef(id=1, name="Lead", activates_account=False)
ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
INACTIVE = StatusRef(id=3, name="Inactive", activates_account=False)
FIBRE = {
    "name": "Fibre 100",
    "kind": "data",
    "price": "49.99",
    "currency": "USD",
    "download_kbps": 100_000,
    "upload_kbps": 20_000,
}
VACATION = {
    "name": "Vacation 1M",
    "kind": "data",
    "price": "5.00",
    "currency": "USD",
    "download_kbps": 1000,
    "upload_kbps": 1000,
}


def _envelope(event: Event, account_id: int) -> Envelope:
    return Envelope.wrap(event, producer="test", subject=account_id)


async def publish(settings, event: Event, account_id: int) -> Envelope:
    """Put an event on its (prefixed) topic the way its producing service would."""
    envelope = _envelope(event, account_id)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(event.topic), envelope.to_bytes(), key=str(account_id).encode()
        )
    finally:
        await producer.stop()
    return envelope


def created(account_id: int, status: StatusRef = ACTIVE, **extra) -> AccountCreated:
    return AccountCreated(
        account_id=account_id,
        name=f"Account {account_id}",
        status=status,
        created_at=datetime.now(UTC),
        **extra,
    )


async def known_account(runtime, account_id: int, status: StatusRef = ACTIVE, **extra) -> None:
    record = Record(
        topic="accounts.events.v1",
        value=_envelope(created(account_id, status, **extra), account_id).to_bytes(),
    )
    assert await runtime.consumer.process(record) is Outcome.HANDLED


async def new_service(client, body) -> dict:
    response = await client.post("/services", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def disconnected(
    account_id: int, proration: Proration = Proration.INHERIT, disconnection_id=None
) -> AccountDisconnected:
    return AccountDisconnected(
        account_id=account_id,
        account_name="x",
        disconnection_id=disconnection_id or uuid4(),
        disconnected_at=datetime.now(UTC),
        disconnected_by="staff@isp",
        previous_status=ACTIVE,
        status=INACTIVE,
        proration=proration,
    )


async def test_account_replica_comes_from_kafka_and_unknown_accounts_are_404(service, settings):
    _runtime, client = service
    unknown = await client.get("/accounts/7001/services")
    assert unknown.status_code == 404
    assert "billing does not know account 7001" in unknown.json()["message"]

    await publish(settings, created(7001, billing_day=15), 7001)

    async def replica():
        response = await client.get("/accounts/7001")
        assert response.status_code == 200
        return response.json()

    account = await eventually(replica)
    assert account["activates"] is True and account["billing_day"] == 15


async def test_add_data_service_debits_and_publishes_with_speeds(
    service, settings, kafka_bootstrap
):
    runtime, client = service
    await known_account(runtime, 42)
    fibre = await new_service(client, FIBRE)
    assert fibre["price"] == "49.99"

    response = await client.post(
        "/accounts/42/services", json={"service_id": fibre["id"], "prorates": False}
    )
    assert response.status_code == 201, response.text
    added = response.json()
    assert added["service"]["download_kbps"] == 100_000
    assert added["price"] == "49.99" and added["quantity"] == 1

    transactions = (await client.get("/accounts/42/transactions")).json()
    assert [(t["type"], t["amount"], t["balance"]) for t in transactions] == [
        ("debit", "49.99", "49.99")
    ]
    balance = (await client.get("/accounts/42/balance")).json()
    assert balance["uninvoiced_debits"] == "49.99"
    assert balance["total_balance"] == "49.99"
    assert balance["next_recurring_charge"] == "49.99"

    # ServiceDefined (the catalogue), then AccountServiceAdded
    events = await read_events(kafka_bootstrap, settings.topic(BILLING_EVENTS), count=2)
    added_event = next(e for e in events if e.event_type == "AccountServiceAdded")
    assert added_event.payload["service"]["download_kbps"] == 100_000
    assert added_event.subject == "42"


async def test_second_data_service_is_409_and_changes_nothing(local_service):
    runtime, client = local_service
    await known_account(runtime, 43)
    fibre = await new_service(client, FIBRE)
    vacation = await new_service(client, VACATION)
    assert (
        await client.post("/accounts/43/services", json={"service_id": fibre["id"]})
    ).status_code == 201
    before = (await client.get("/accounts/43/transactions")).json()

    second = await client.post("/accounts/43/services", json={"service_id": vacation["id"]})

    assert second.status_code == 409
    assert "remove the existing data service first" in second.json()["message"]
    assert (await client.get("/accounts/43/transactions")).json() == before
    assert len((await client.get("/accounts/43/services")).json()) == 1


async def test_lead_accounts_are_not_billed_until_activated(local_service):
    runtime, client = local_service
    await known_account(runtime, 44, status=LEAD)
    fibre = await new_service(client, FIBRE)
    await client.post("/accounts/44/services", json={"service_id": fibre["id"], "prorates": False})
    assert (await client.get("/accounts/44/transactions")).json() == []

    change = AccountStatusChanged(
        account_id=44,
        previous_status=LEAD,
        status=ACTIVE,
        changed_by="staff",
        changed_at=datetime.now(UTC),
    )
    record = Record(topic="accounts.events.v1", value=_envelope(change, 44).to_bytes())
    assert await runtime.consumer.process(record) is Outcome.HANDLED

    transactions = (await client.get("/accounts/44/transactions")).json()
    assert [t["amount"] for t in transactions] == ["49.99"]


async def test_final_invoice_once_per_disconnection(service, settings, kafka_bootstrap):
    runtime, client = service
    await known_account(runtime, 45)
    fibre = await new_service(client, FIBRE)
    await client.post("/accounts/45/services", json={"service_id": fibre["id"], "prorates": False})
    event = disconnected(45, Proration.NONE)
    first = await publish(settings, event, 45)

    async def invoiced():
        invoices = (await client.get("/accounts/45/invoices")).json()
        assert len(invoices) == 1
        return invoices[0]

    invoice = await eventually(invoiced)
    assert invoice["final"] is True
    assert invoice["disconnection_id"] == str(event.disconnection_id)
    assert invoice["total"] == "49.99"
    assert [d["amount"] for d in invoice["debits"]] == ["49.99"]

    # The same event again, and the same disconnection under a new event id: no second one.
    assert (
        await runtime.consumer.process(Record(topic="accounts.events.v1", value=first.to_bytes()))
        is Outcome.DUPLICATE
    )
    again = _envelope(event, 45)
    assert (
        await runtime.consumer.process(Record(topic="accounts.events.v1", value=again.to_bytes()))
        is Outcome.HANDLED
    )
    assert len((await client.get("/accounts/45/invoices")).json()) == 1

    # ServiceDefined, AccountServiceAdded, InvoiceIssued
    events = await read_events(kafka_bootstrap, settings.topic(BILLING_EVENTS), count=3)
    issued = [e for e in events if e.event_type == "InvoiceIssued"]
    assert len(issued) == 1
    assert issued[0].payload["final"] is True
    assert issued[0].payload["disconnection_id"] == str(event.disconnection_id)
    assert issued[0].payload["proration"] == "none"


async def test_final_invoice_with_no_debits_is_zero(local_service):
    runtime, client = local_service
    await known_account(runtime, 46)
    record = Record(topic="accounts.events.v1", value=_envelope(disconnected(46), 46).to_bytes())
    assert await runtime.consumer.process(record) is Outcome.HANDLED
    [invoice] = (await client.get("/accounts/46/invoices")).json()
    assert invoice["final"] is True and invoice["total"] == "0.00"


async def test_final_invoice_credits_the_unused_part_when_asked(local_service):
    runtime, client = local_service
    await known_account(runtime, 47)
    fibre = await new_service(client, FIBRE)
    added = (
        await client.post(
            "/accounts/47/services", json={"service_id": fibre["id"], "prorates": False}
        )
    ).json()
    # Bill the current period, then disconnect with proration.
    assert (await client.post("/accounts/47/invoices")).status_code == 201
    record = Record(
        topic="accounts.events.v1",
        value=_envelope(disconnected(47, Proration.CREDIT_UNUSED), 47).to_bytes(),
    )
    assert await runtime.consumer.process(record) is Outcome.HANDLED

    invoices = (await client.get("/accounts/47/invoices")).json()
    final = next(i for i in invoices if i["final"])
    assert final["total"] == "0.00"  # nothing uninvoiced; the credit is available instead
    transactions = (await client.get("/accounts/47/transactions")).json()
    credits = [t for t in transactions if t["type"] == "discount"]
    assert len(credits) == 1 and credits[0]["account_service_id"] == added["id"]
    balance = (await client.get("/accounts/47/balance")).json()
    assert Decimal(balance["total_balance"]) == Decimal("49.99") - Decimal(credits[0]["total"])


async def test_scheduler_commands_are_answered(service, settings, kafka_bootstrap):
    runtime, client = service
    await known_account(runtime, 48)
    fibre = await new_service(client, FIBRE)
    vacation = await new_service(client, VACATION)
    await client.post("/accounts/48/services", json={"service_id": fibre["id"]})

    refused = await publish(
        settings,
        AddAccountService(account_id=48, service_id=vacation["id"], requested_by="scheduler"),
        48,
    )
    removed = await publish(
        settings,
        RemoveAccountService(account_id=48, service_id=fibre["id"], requested_by="scheduler"),
        48,
    )
    added = await publish(
        settings,
        AddAccountService(account_id=48, service_id=vacation["id"], requested_by="scheduler"),
        48,
    )

    async def answered():
        events = await read_events(
            kafka_bootstrap, settings.topic(BILLING_EVENTS), count=1, timeout=2
        )
        outcomes = {
            e.causation_id: e
            for e in events
            if e.event_type in ("CommandSucceeded", "CommandFailed")
        }
        assert {refused.event_id, removed.event_id, added.event_id} <= set(outcomes)
        return outcomes

    outcomes = await eventually(answered, timeout=30)
    assert outcomes[refused.event_id].event_type == "CommandFailed"
    assert "remove the existing data service first" in outcomes[refused.event_id].payload["reason"]
    assert outcomes[removed.event_id].event_type == "CommandSucceeded"
    assert outcomes[added.event_id].event_type == "CommandSucceeded"
    services = (await client.get("/accounts/48/services")).json()
    assert [s["service"]["name"] for s in services] == ["Vacation 1M"]


async def test_settings_and_bad_input(local_service):
    runtime, client = local_service
    assert (await client.get("/settings")).json()["final_invoice_proration"] == "credit_unused"
    changed = await client.put("/settings", json={"final_invoice_proration": "none"})
    assert changed.status_code == 200 and changed.json()["final_invoice_proration"] == "none"
    assert (
        await client.put("/settings", json={"final_invoice_proration": "inherit"})
    ).status_code == 422

    negative = await client.post("/services", json={**FIBRE, "price": "-1.00"})
    assert negative.status_code == 422 and "negative" in negative.json()["message"]
    malformed = await client.post("/services", json={**FIBRE, "price": "12.345"})
    assert malformed.status_code == 422 and "decimals" in malformed.json()["message"]
    assert (await client.post("/services", json={**FIBRE, "price": "abc"})).status_code == 422
    await known_account(runtime, 49)
    unknown = await client.post("/accounts/49/services", json={"service_id": 999})
    assert unknown.status_code == 404 and "service 999" in unknown.json()["message"]


async def test_final_invoice_with_proration_shows_the_unused_credit_as_a_line(local_service):
    runtime, client = local_service
    await known_account(runtime, 50, billing_day=1)
    fibre = await new_service(client, FIBRE)
    await client.put("/settings", json={"final_invoice_proration": "credit_unused"})
    await client.post("/accounts/50/services", json={"service_id": fibre["id"], "prorates": False})
    event = disconnected(50)  # inherit: the global setting, credit_unused
    record = Record(topic="accounts.events.v1", value=_envelope(event, 50).to_bytes())
    assert await runtime.consumer.process(record) is Outcome.HANDLED

    day = event.disconnected_at.date()
    credit = rules.unused_credit(Decimal("49.99"), rules.period_containing(day, 1), day)
    [invoice] = (await client.get("/accounts/50/invoices")).json()
    assert Decimal(invoice["total"]) == Decimal("49.99") - credit
    assert [(line["type"], Decimal(line["total"])) for line in invoice["lines"]] == (
        [("debit", Decimal("49.99"))] + ([("discount", credit)] if credit else [])
    )
    balance = (await client.get("/accounts/50/balance")).json()
    assert Decimal(balance["total_balance"]) == Decimal(invoice["total"])


async def test_disconnect_of_an_account_billing_never_heard_of_still_completes(local_service):
    runtime, client = local_service
    record = Record(topic="accounts.events.v1", value=_envelope(disconnected(51), 51).to_bytes())
    assert await runtime.consumer.process(record) is Outcome.HANDLED
    [invoice] = (await client.get("/accounts/51/invoices")).json()
    assert invoice["final"] is True and invoice["total"] == "0.00"
    assert (await client.get("/accounts/51")).json()["activates"] is False
