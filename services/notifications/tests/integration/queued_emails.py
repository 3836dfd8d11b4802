"""What the email tests publish and queue, and how they read the emails back: the
events that trigger email, published on Kafka or queued straight through the handler,
the emails through the API and as rows, the outbox's events, and the dispatchers' clock."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from sqlalchemy import select

from backhaul_contracts import Envelope, Event
from backhaul_contracts.common import ContactRef, StatusRef
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
)
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.testing import eventually
from notifications.adapters.tables import Email
from notifications.service_layer import handlers

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
INACTIVE = StatusRef(id=3, name="Inactive", activates_account=False)
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _contact(email, *, contact_id=1, primary=True, categories=()):
    return ContactRef(
        contact_id=contact_id,
        name="Ada Lovelace",
        email=email,
        is_primary=primary,
        message_categories=list(categories),
    )


async def _publish(runtime, settings, event: Event, *, producer="accounts") -> Envelope:
    envelope = Envelope.wrap(event, producer=producer, subject=event.account_id)  # type: ignore[attr-defined]
    await runtime.producer.send_and_wait(
        settings.topic(event.topic), envelope.to_bytes(), key=envelope.subject.encode()
    )
    return envelope


async def _created(runtime, settings, account_id, email, **extra):
    """Publish AccountCreated and wait until the replica has it (other topics race it)."""
    envelope = await _publish(
        runtime,
        settings,
        AccountCreated(
            account_id=account_id,
            name=f"Account {account_id}",
            status=ACTIVE,
            primary_contact=_contact(email, contact_id=account_id * 10) if email else None,
            created_at=NOW,
            **extra,
        ),
    )
    client = runtime.test_client

    async def replicated():
        response = await client.get(f"/accounts/{account_id}/contacts")
        assert response.status_code == 200, response.text

    await eventually(replicated)
    return envelope


def _disconnected(account_id, email, **extra):
    return AccountDisconnected(
        account_id=account_id,
        account_name=f"Account {account_id}",
        disconnection_id=uuid4(),
        disconnected_at=NOW,
        disconnected_by="staff@isp",
        previous_status=ACTIVE,
        status=INACTIVE,
        primary_contact=_contact(email, contact_id=account_id * 10) if email else None,
        **extra,
    )


async def _queue_directly(runtime, settings, event, envelope) -> None:
    """Queue the event's email through the handler, without waking the dispatcher loop."""
    async with runtime.uow() as uow:
        await handlers.on_event(
            event,
            envelope,
            uow,
            mailing=handlers.Mailing(staff_email=None, mail_from=settings.mail_from),
        )


async def _emails(client, account_id, **params):
    response = await client.get(f"/accounts/{account_id}/emails", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _until_state(client, account_id, state, count=1):
    async def check():
        emails = await _emails(client, account_id)
        assert [e["state"] for e in emails] == [state] * count, emails
        return emails

    return check


class _Clock:
    """The dispatchers' clock in these tests: time passes only when the test says so."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


async def _queued(runtime, settings, account_id, recipient):
    disconnected = _disconnected(account_id, recipient)
    envelope = Envelope.wrap(disconnected, producer="accounts", subject=account_id)
    await _queue_directly(runtime, settings, disconnected, envelope)
    async with runtime.db.transaction() as session:
        return await session.scalar(select(Email.id).where(Email.account_id == account_id))


async def _row(runtime, email_id) -> Email:
    async with runtime.db.transaction() as session:
        email = await session.get(Email, email_id)
        assert email is not None
        return email


async def _emitted(runtime) -> list[str]:
    """The events staged in the outbox (no relay runs here), in order."""
    async with runtime.db.transaction() as session:
        rows = await session.scalars(
            select(outbox_messages.c.event_type).order_by(outbox_messages.c.id)
        )
        return list(rows)
