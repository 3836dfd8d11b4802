"""Triggered email against a real database, a real Kafka broker and a real SMTP server."""

import asyncio
import email as email_parsing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from backhaul_contracts import Envelope, Event
from backhaul_contracts.common import ContactRef, StatusRef
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
    ContactChanged,
)
from backhaul_contracts.events.billing import InvoiceIssued
from backhaul_contracts.events.scheduler import ScheduledEventFailed
from backhaul_contracts.topics import NOTIFICATIONS_EVENTS
from backhaul_devstack.kafka_broker import free_port
from backhaul_devstack.smtp_sink import read_messages, read_repeats
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.testing import eventually, read_events, running
from notifications.adapters.smtp import IDEMPOTENCY_HEADER, SmtpMailer
from notifications.adapters.tables import Email
from notifications.bootstrap import bootstrap
from notifications.domain.delivery import (
    CLAIM_LOST,
    RELAY_PROBLEM,
    EmailState,
    Reply,
    UnknownOutcome,
    Verdict,
    classify,
)
from notifications.service_layer import delivery, handlers
from notifications.service_layer.delivery import DeliveryPolicy, Dispatcher

pytestmark = pytest.mark.integration

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


async def test_disconnect_emails_the_primary_contact_once(service, settings, mail_sink):
    runtime, client = service
    await _created(runtime, settings, 101, "ada@example.com")
    disconnected = _disconnected(101, "ada@example.com")
    envelope = await _publish(runtime, settings, disconnected)

    emails = await eventually(_until_state(client, 101, "sent"))
    email = emails[0]
    assert email["recipient"] == "ada@example.com"
    assert email["subject"] == "Your account Account 101 has been disconnected"
    assert email["trigger_event_type"] == "AccountDisconnected"
    assert email["trigger_event_id"] == str(envelope.event_id)
    assert email["reject_reason"] is None
    assert email["queued_at"] and email["sent_at"]
    assert email["body"] is None
    with_body = await _emails(client, 101, include_body="true")
    assert "Hello Ada Lovelace" in with_body[0]["body"]
    one = (await client.get(f"/emails/{email['id']}")).json()
    assert one["body"] == with_body[0]["body"]

    [message] = read_messages(mail_sink.directory)
    assert message["to"] == "ada@example.com"
    assert message["idempotency_key"] == f"{envelope.event_id}:ada@example.com"
    assert message["message_id"] == email["message_id"]

    events = await read_events(
        settings.kafka_bootstrap_servers, settings.topic(NOTIFICATIONS_EVENTS), count=2
    )
    assert [e.event_type for e in events] == ["EmailQueued", "EmailSent"]
    for event in events:
        assert event.payload["disconnection_id"] == str(disconnected.disconnection_id)
        assert event.payload["trigger_event_id"] == str(envelope.event_id)
        assert event.subject == "101"

    # Redelivered: by Kafka (the inbox drops it) and even past the inbox (the key does).
    record = Record(topic=settings.topic(disconnected.topic), value=envelope.to_bytes())
    assert await runtime.consumer.process(record) is Outcome.DUPLICATE
    await _queue_directly(runtime, settings, disconnected, envelope)
    await runtime.dispatcher.deliver_due()
    async with runtime.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Email)) == 1
    assert len(read_messages(mail_sink.directory)) == 1


async def test_no_primary_contact_email_sends_nothing(service, settings, mail_sink):
    runtime, client = service
    await _created(runtime, settings, 102, None)
    await _publish(runtime, settings, _disconnected(102, None))
    marker = await _created(runtime, settings, 103, "grace@example.com")
    await _publish(runtime, settings, _disconnected(103, "grace@example.com"))
    # Both accounts' events share one partition order only per key; wait for the later one.
    await eventually(_until_state(client, 103, "sent"))
    assert marker
    assert await _emails(client, 102) == []
    assert [m["to"] for m in read_messages(mail_sink.directory)] == ["grace@example.com"]


async def test_temporary_rejections_are_retried_then_rejected(service, settings, mail_sink):
    runtime, client = service
    mail_sink.handler.temporary_failure_domains.add("greylist.example")
    await _created(runtime, settings, 201, "bob@greylist.example")
    await _publish(runtime, settings, _disconnected(201, "bob@greylist.example"))

    emails = await eventually(_until_state(client, 201, "rejected"), timeout=30)
    assert emails[0]["attempts"] == settings.email_max_attempts
    assert emails[0]["reject_reason"].startswith("451 4.7.1")
    assert "gave up after 3 attempts" in emails[0]["reject_reason"]
    assert read_messages(mail_sink.directory) == []
    events = await read_events(
        settings.kafka_bootstrap_servers, settings.topic(NOTIFICATIONS_EVENTS), count=2
    )
    rejected = [e for e in events if e.event_type == "EmailRejected"]
    assert rejected and rejected[0].payload["permanent"] is False


async def test_a_temporary_rejection_that_clears_is_sent(service, settings, mail_sink):
    runtime, client = service
    mail_sink.handler.temporary_failure_domains.add("slow.example")
    await _created(runtime, settings, 202, "cy@slow.example")
    await _publish(runtime, settings, _disconnected(202, "cy@slow.example"))

    async def deferred():
        emails = await _emails(client, 202)
        assert len(emails) == 1
        email = emails[0]
        assert email["state"] == "queued" and email["attempts"] >= 1
        assert (email["reject_reason"] or "").startswith("451")  # why it is still waiting

    await eventually(deferred)
    mail_sink.handler.temporary_failure_domains.clear()
    [email] = await eventually(_until_state(client, 202, "sent"))
    assert email["attempts"] >= 2
    assert len(read_messages(mail_sink.directory)) == 1


async def test_permanent_rejection_is_not_retried(service, settings, mail_sink):
    runtime, client = service
    mail_sink.handler.permanent_failure_domains.add("gone.example")
    await _created(runtime, settings, 301, "dee@gone.example")
    await _publish(runtime, settings, _disconnected(301, "dee@gone.example"))

    [email] = await eventually(_until_state(client, 301, "rejected"))
    assert email["attempts"] == 1
    assert email["reject_reason"].startswith("550 5.1.1")
    assert "user unknown" in email["reject_reason"]
    rejected = (await client.get("/emails", params={"state": "rejected"})).json()
    assert [e["id"] for e in rejected] == [email["id"]]
    assert (await client.get("/emails", params={"state": "sent"})).json() == []


async def test_undeliverable_address_is_invalid_and_never_sent(service, settings, mail_sink):
    runtime, client = service
    refuse = mail_sink.handler.handle_RCPT

    async def bad_syntax(server, session, envelope, address, options):
        # A relay that finds the address malformed answers 553 / 5.1.3 (RFC 3463).
        if address.endswith("@typo.example"):
            return f"553 5.1.3 <{address}>: bad destination mailbox address syntax"
        return await refuse(server, session, envelope, address, options)

    mail_sink.handler.handle_RCPT = bad_syntax
    await _created(runtime, settings, 401, "eve@typo.example")
    await _publish(runtime, settings, _disconnected(401, "eve@typo.example"))

    [email] = await eventually(_until_state(client, 401, "invalid"))
    assert email["reject_reason"].startswith("553 5.1.3")
    assert email["attempts"] == 1
    assert read_messages(mail_sink.directory) == []
    events = await read_events(
        settings.kafka_bootstrap_servers, settings.topic(NOTIFICATIONS_EVENTS), count=2
    )
    [rejected] = [e for e in events if e.event_type == "EmailRejected"]
    assert rejected.payload["invalid"] is True and rejected.payload["permanent"] is True


async def test_worker_dying_mid_send_never_sends_twice(service, settings, mail_sink):
    """Claimed and sent, but the outcome never recorded: the row is closed, not resent."""
    runtime, client = service
    dispatcher = runtime.dispatcher
    await _created(runtime, settings, 501, "fay@example.com")
    disconnected = _disconnected(501, "fay@example.com")
    envelope = Envelope.wrap(disconnected, producer="accounts", subject=501)
    # Queue without waking the running dispatcher loop, then act as a worker that dies.
    await _queue_directly(runtime, settings, disconnected, envelope)
    async with runtime.db.transaction() as session:
        email_id = await session.scalar(select(Email.id).where(Email.account_id == 501))
    claimed = await dispatcher.claim(email_id)
    if claimed is None:  # the background loop won the claim; it then sends exactly once
        await eventually(_until_state(client, 501, "sent"))
    else:
        await dispatcher.send(claimed)  # ... and the process dies before `record`
        later = dispatcher.clock() + dispatcher.policy.send_lease + timedelta(seconds=1)
        dispatcher.clock = lambda: later
        try:
            await dispatcher.deliver_due()
        finally:
            del dispatcher.clock
        [email] = await _emails(client, 501)
        assert email["state"] == "rejected"
        assert "outcome unknown" in email["reject_reason"]
    assert len(read_messages(mail_sink.directory)) == 1


async def test_final_invoice_vacation_and_staff_triggers(service, settings, mail_sink):
    runtime, client = service
    billing_desk = await client.post(
        "/triggers",
        json={
            "name": "Failed service change, to the billing desk",
            "event_type": "ScheduledEventFailed",
            "conditions": {"action": "remove_service"},
            "audience": "staff",
            "address": "billing-desk@isp.local",
            "subject_template": "Could not remove a service from {{ account.id }}",
            "body_template": "{{ event.reason }}",
        },
    )
    assert billing_desk.status_code == 201, billing_desk.text
    await _created(runtime, settings, 601, "gus@example.com")
    await _publish(
        runtime,
        settings,
        InvoiceIssued(
            account_id=601,
            invoice_id=9,
            number="INV-9",
            total=Decimal("12.50"),
            currency="USD",
            issued_at=NOW,
            due_date=NOW.date(),
            final=True,
            disconnection_id=uuid4(),
        ),
        producer="billing",
    )
    await _publish(
        runtime,
        settings,
        InvoiceIssued(
            account_id=601,
            invoice_id=10,
            number="INV-10",
            total=Decimal("5"),
            currency="USD",
            issued_at=NOW,
            due_date=NOW.date(),
            final=False,
        ),
        producer="billing",
    )
    await _publish(
        runtime,
        settings,
        AccountStatusChanged(
            account_id=601,
            previous_status=ACTIVE,
            status=StatusRef(id=7, name="Vacation", activates_account=True),
            changed_by="scheduler",
            changed_at=NOW,
        ),
    )
    await _publish(
        runtime,
        settings,
        ScheduledEventFailed(
            scheduled_event_id=uuid4(),
            account_id=601,
            action="add_service",
            failed_at=NOW,
            reason="a data service is already present",
        ),
        producer="scheduler",
    )
    await _publish(
        runtime,
        settings,
        ScheduledEventFailed(
            scheduled_event_id=uuid4(),
            account_id=601,
            action="remove_service",
            failed_at=NOW,
            reason="the service is not on the account",
        ),
        producer="scheduler",
    )
    emails = await eventually(_until_state(client, 601, "sent", count=5))
    by_subject = {e["subject"]: e for e in emails}
    assert set(by_subject) == {
        "Your final invoice INV-9",
        "Your account Account 601 is in vacation mode",
        "Scheduled add_service failed for account 601",
        # Two staff triggers match remove_service: one email to each address.
        "Scheduled remove_service failed for account 601",
        "Could not remove a service from 601",
    }
    desk = by_subject["Could not remove a service from 601"]
    assert desk["recipient"] == "billing-desk@isp.local"
    staff = by_subject["Scheduled add_service failed for account 601"]
    assert staff["recipient"] == "noc@isp.example"
    final = by_subject["Your final invoice INV-9"]
    assert final["disconnection_id"] is None  # only the disconnect email is a disconnect step
    body = (await client.get(f"/emails/{final['id']}")).json()["body"]
    assert "12.50 USD" in body


async def test_categories_and_child_accounts(service, settings, mail_sink):
    runtime, client = service
    created = await client.post(
        "/triggers",
        json={
            "name": "Outage notice",
            "event_type": "AccountStatusChanged",
            "conditions": {"status.name": "Outage"},
            "audience": "all_contacts",
            "category": "outages",
            "subject_template": "Outage on {{ account.name }}",
            "body_template": "Hi {{ contact.name }}, {{ event.reason or 'no reason' }}",
        },
    )
    assert created.status_code == 201, created.text
    await _created(runtime, settings, 701, "primary@example.com")
    await _publish(
        runtime,
        settings,
        ContactChanged(
            account_id=701,
            account_name="Account 701",
            contact=_contact(
                "tech@example.com", contact_id=7002, primary=False, categories=["Outages"]
            ),
        ),
    )
    # A child of 701: its messages go to the parent's contacts, never its own.
    await _created(runtime, settings, 702, "child@example.com", parent_account_id=701)
    outage = StatusRef(id=9, name="Outage", activates_account=True)
    await _publish(
        runtime,
        settings,
        AccountStatusChanged(
            account_id=702,
            previous_status=ACTIVE,
            status=outage,
            changed_by="noc",
            changed_at=NOW,
            parent_account_id=701,
        ),
    )
    [email] = await eventually(_until_state(client, 701, "sent"))
    assert email["recipient"] == "tech@example.com"  # the primary did not choose "outages"
    assert email["subject"] == "Outage on Account 702"
    assert await _emails(client, 702) == []
    assert [m["to"] for m in read_messages(mail_sink.directory)] == ["tech@example.com"]


async def test_an_event_published_twice_on_kafka_is_mailed_once(service, settings, mail_sink):
    runtime, client = service
    await _created(runtime, settings, 801, "hal@example.com")
    envelope = await _publish(runtime, settings, _disconnected(801, "hal@example.com"))
    await runtime.producer.send_and_wait(
        settings.topic("accounts.events.v1"),
        envelope.to_bytes(),
        key=envelope.subject.encode(),
    )
    marker = await _publish(runtime, settings, _disconnected(802, "ivy@example.com"))
    # The marker follows the duplicate on the same topic: once it is mailed, both were handled.
    assert marker.subject == "802"
    await eventually(_until_state(client, 802, "sent"))
    await eventually(_until_state(client, 801, "sent"))
    assert sorted(m["to"] for m in read_messages(mail_sink.directory)) == [
        "hal@example.com",
        "ivy@example.com",
    ]


async def test_a_template_that_does_not_fit_the_data_is_invalid_not_a_crash(
    service, settings, mail_sink
):
    runtime, client = service
    created = await client.post(
        "/triggers",
        json={
            "name": "Reason required",
            "event_type": "AccountStatusChanged",
            "conditions": {"status.name": "Suspended"},
            "subject_template": "Suspended: {{ event.reason.upper() }}",
            "body_template": "-",
        },
    )
    assert created.status_code == 201, created.text
    await _created(runtime, settings, 901, "joy@example.com")
    suspended = StatusRef(id=11, name="Suspended", activates_account=False)
    await _publish(
        runtime,
        settings,
        AccountStatusChanged(
            account_id=901,
            previous_status=ACTIVE,
            status=suspended,
            changed_by="noc",
            changed_at=NOW,  # no reason: `None.upper()` cannot render
        ),
    )
    [email] = await eventually(_until_state(client, 901, "invalid"))
    assert "could not be rendered" in email["reject_reason"]
    assert email["subject"] == "Reason required"
    # The worker carries on: the next event is mailed.
    await _publish(runtime, settings, _disconnected(901, "joy@example.com"))

    async def both():
        states = sorted(e["state"] for e in await _emails(client, 901))
        assert states == ["invalid", "sent"]

    await eventually(both)
    assert [m["to"] for m in read_messages(mail_sink.directory)] == ["joy@example.com"]


async def test_a_disabled_trigger_sends_nothing_and_a_child_disconnect_mails_the_parent(
    service, settings, mail_sink
):
    runtime, client = service
    vacation = next(t for t in (await client.get("/triggers")).json() if t["id"] == 3)
    off = await client.patch(f"/triggers/{vacation['id']}", json={"enabled": False})
    assert off.status_code == 200
    await _created(runtime, settings, 1001, "parent@example.com")
    await _created(runtime, settings, 1002, "child@example.com", parent_account_id=1001)
    await _publish(
        runtime,
        settings,
        AccountStatusChanged(
            account_id=1001,
            previous_status=ACTIVE,
            status=StatusRef(id=7, name="Vacation", activates_account=True),
            changed_by="scheduler",
            changed_at=NOW,
        ),
    )
    await _publish(
        runtime, settings, _disconnected(1002, "child@example.com", parent_account_id=1001)
    )
    [email] = await eventually(_until_state(client, 1001, "sent"))
    assert email["recipient"] == "parent@example.com"
    assert email["subject"] == "Your account Account 1002 has been disconnected"
    assert email["trigger_event_type"] == "AccountDisconnected"
    assert await _emails(client, 1002) == []


async def test_a_relay_outage_keeps_email_queued_without_using_up_attempts(
    service, settings, mail_sink
):
    runtime, client = service
    mail_sink.controller.stop()
    await _created(runtime, settings, 1101, "kim@example.com")
    await _publish(runtime, settings, _disconnected(1101, "kim@example.com"))

    async def waiting_for_the_relay():
        emails = await _emails(client, 1101)
        assert len(emails) == 1 and (emails[0]["reject_reason"] or "").startswith("relay problem")
        return emails[0]

    email = await eventually(waiting_for_the_relay)
    assert email["state"] == "queued" and email["attempts"] == 0
    # The relay comes back on the same port (an aiosmtpd controller cannot be restarted).
    mail_sink.controller = Controller(
        mail_sink.handler, hostname="127.0.0.1", port=settings.smtp_port
    )
    mail_sink.controller.start()
    [email] = await eventually(_until_state(client, 1101, "sent"))
    assert email["attempts"] == 1
    assert [m["to"] for m in read_messages(mail_sink.directory)] == ["kim@example.com"]


async def test_two_replicas_never_claim_the_same_email(settings, mail_sink):
    """Replicas share the queue: the claim is a conditional update, so exactly one wins."""
    runtime = bootstrap(settings)
    async with running(runtime, worker=False):
        disconnected = _disconnected(1201, "lee@example.com")
        envelope = Envelope.wrap(disconnected, producer="accounts", subject=1201)
        await _queue_directly(runtime, settings, disconnected, envelope)
        async with runtime.db.transaction() as session:
            email_id = await session.scalar(select(Email.id).where(Email.account_id == 1201))
        first = runtime.dispatcher
        second = Dispatcher(runtime.uow, SmtpMailer(settings), first.policy)

        claims = await asyncio.gather(*(d.claim(email_id) for d in (first, second, first)))
        winners = [c for c in claims if c is not None]
        assert len(winners) == 1
        assert await second.deliver_due() == 0  # claimed: not due for anyone else
        reply = await first.send(winners[0])
        assert await first.record(winners[0], reply) == EmailState.SENT
        assert await second.deliver_due() == 0
    assert [m["to"] for m in read_messages(mail_sink.directory)] == ["lee@example.com"]


class _SlowRelay:
    """An SMTP relay that takes a while to accept each message."""

    def __init__(self) -> None:
        self.received: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(1.0)
        self.received.extend(envelope.rcpt_tos)
        return "250 OK"


async def test_a_graceful_stop_mid_send_finishes_and_records_the_email(settings):
    """Stopping the worker while an email is on the wire lets that send finish and records
    it Sent (a replica leaving during a rebalance must not leave its outcome unknown)."""
    relay = _SlowRelay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        slow = settings.model_copy(update={"smtp_port": controller.port})
        runtime = bootstrap(slow)
        async with running(runtime, worker=False):
            disconnected = _disconnected(1301, "kim@example.com")
            envelope = Envelope.wrap(disconnected, producer="accounts", subject=1301)
            await _queue_directly(runtime, slow, disconnected, envelope)
            dispatcher = Dispatcher(runtime.uow, SmtpMailer(slow), runtime.dispatcher.policy)
            delivering = asyncio.create_task(dispatcher.deliver_due())

            async def on_the_wire():
                async with runtime.db.transaction() as session:
                    claimed = await session.scalar(
                        select(Email.sending_since).where(Email.account_id == 1301)
                    )
                assert claimed is not None

            await eventually(on_the_wire)
            delivering.cancel()
            with pytest.raises(asyncio.CancelledError):
                await delivering

            async with runtime.db.transaction() as session:
                email = await session.scalar(select(Email).where(Email.account_id == 1301))
            assert email.state == EmailState.SENT.value
            assert email.sending_since is None
        assert relay.received == ["kim@example.com"]
    finally:
        controller.stop()


class _CountingRelay(_SlowRelay):
    """A slow relay that notes how many messages it was given at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_data = 0
        self.most_at_once = 0

    async def handle_DATA(self, server, session, envelope):
        self.in_data += 1
        self.most_at_once = max(self.most_at_once, self.in_data)
        try:
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.in_data -= 1


@pytest.fixture
def counting_relay():
    relay = _CountingRelay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield relay, controller.port
    controller.stop()


async def test_a_round_sends_its_emails_concurrently_each_once(settings, counting_relay):
    """EMAIL_SEND_CONCURRENCY emails of a round are on the wire at once, each under its own
    claim: every one is sent once and recorded Sent."""
    relay, port = counting_relay
    slow = settings.model_copy(update={"smtp_port": port, "email_send_concurrency": 3})
    runtime = bootstrap(slow)
    async with running(runtime, worker=False):
        recipients = [f"crowd{n}@example.com" for n in range(7)]
        for n, recipient in enumerate(recipients):
            await _queued(runtime, slow, 1400 + n, recipient)
        assert runtime.dispatcher.policy.concurrency == 3

        assert await runtime.dispatcher.deliver_due() == 7

        async with runtime.db.transaction() as session:
            states = list(
                await session.scalars(
                    select(Email.state).where(Email.account_id.between(1400, 1406))
                )
            )
        assert states == [EmailState.SENT.value] * 7
        assert await runtime.dispatcher.deliver_due() == 0
    assert sorted(relay.received) == sorted(recipients)
    assert relay.most_at_once == 3


async def test_a_graceful_stop_finishes_the_sends_in_flight_and_claims_no_more(
    settings, counting_relay
):
    relay, port = counting_relay
    slow = settings.model_copy(update={"smtp_port": port, "email_send_concurrency": 2})
    runtime = bootstrap(slow)
    async with running(runtime, worker=False):
        for n in range(5):
            await _queued(runtime, slow, 1500 + n, f"queue{n}@example.com")
        delivering = asyncio.create_task(runtime.dispatcher.deliver_due())

        async def two_on_the_wire():
            assert relay.in_data == 2

        await eventually(two_on_the_wire)
        delivering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await delivering

        async with runtime.db.transaction() as session:
            rows = (
                await session.execute(
                    select(Email.state, Email.sending_since, Email.attempts).where(
                        Email.account_id.between(1500, 1504)
                    )
                )
            ).all()
    sent = [r for r in rows if r.state == EmailState.SENT.value]
    untouched = [r for r in rows if r.state == EmailState.QUEUED.value]
    assert len(sent) == 2 and len(untouched) == 3, rows
    assert all(r.sending_since is None and r.attempts == 0 for r in untouched)
    assert len(relay.received) == 2


class _Clock:
    """The dispatchers' clock in these tests: time passes only when the test says so."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
async def idle_worker(settings):
    """The service with no background dispatcher: the test drives dispatchers itself."""
    runtime = bootstrap(settings)
    async with running(runtime, worker=False):
        yield runtime


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


class _StallsBeforeData:
    """The real mailer, but `meanwhile` runs after the relay accepted RCPT and before the
    dispatcher's hook: a worker that stalls there while the world moves on."""

    def __init__(self, mailer, meanwhile) -> None:
        self.mailer = mailer
        self.meanwhile = meanwhile

    async def send(self, message, recipient, *, before_data):
        async def stalled() -> bool:
            await self.meanwhile()
            return await before_data()

        return await self.mailer.send(message, recipient, before_data=stalled)


async def test_a_send_cut_off_before_data_is_requeued_and_sent_once(
    idle_worker, settings, mail_sink
):
    """A worker killed after its claim but before DATA delivered nothing: once the short
    pre-DATA lease is over the row is queued again, uncounted, and the next pass sends it."""
    runtime = idle_worker
    email_id = await _queued(runtime, settings, 1401, "mo@example.com")
    clock = _Clock()
    policy = runtime.dispatcher.policy
    assert policy.pre_data_lease == timedelta(seconds=2 * settings.smtp_timeout_seconds)
    assert policy.pre_data_lease < policy.send_lease
    dispatcher = Dispatcher(runtime.uow, SmtpMailer(settings), policy, clock=clock)
    assert await dispatcher.claim(email_id) is not None
    # ... and the worker dies while connecting, or in MAIL FROM / RCPT TO.

    clock.advance(policy.pre_data_lease - timedelta(seconds=1))
    assert await dispatcher.deliver_due() == 0  # still within its lease: left alone
    clock.advance(timedelta(seconds=2))
    assert await dispatcher.close_abandoned() == 1
    email = await _row(runtime, email_id)
    assert email.state == EmailState.QUEUED.value
    assert email.attempts == 0  # the lost attempt does not count
    assert email.sending_since is None and email.claim_id is None
    assert email.data_started_at is None
    assert email.next_attempt_at == clock.now
    assert read_messages(mail_sink.directory) == []
    assert await _emitted(runtime) == ["EmailQueued"]  # requeueing emits nothing

    assert await dispatcher.deliver_due() == 1
    email = await _row(runtime, email_id)
    assert email.state == EmailState.SENT.value and email.attempts == 1
    assert email.claim_id is None and email.data_started_at is None
    assert await dispatcher.deliver_due() == 0
    assert [m["to"] for m in read_messages(mail_sink.directory)] == ["mo@example.com"]
    assert await _emitted(runtime) == ["EmailQueued", "EmailSent"]


async def _sent_but_not_recorded(runtime, settings, email_id):
    """A dispatcher on a controllable clock that claimed and sent the email (the relay has
    it) and then died before recording the outcome: its DATA marker stays committed."""
    clock = _Clock()
    dispatcher = Dispatcher(
        runtime.uow, SmtpMailer(settings), runtime.dispatcher.policy, clock=clock
    )
    claimed = await dispatcher.claim(email_id)
    assert claimed is not None
    reply = await dispatcher.send(claimed)
    assert classify(reply) is Verdict.SENT
    assert (await _row(runtime, email_id)).data_started_at == clock.now
    return dispatcher, clock, claimed, reply


async def test_a_send_cut_off_after_data_started_is_closed_and_never_resent(
    idle_worker, settings, mail_sink
):
    """Once DATA started the message may be out: the expired claim is closed as outcome
    unknown after the (long) send lease, never requeued and never sent again."""
    runtime = idle_worker
    email_id = await _queued(runtime, settings, 1402, "nia@example.com")
    dispatcher, clock, claimed, reply = await _sent_but_not_recorded(runtime, settings, email_id)
    policy = dispatcher.policy

    clock.advance(policy.pre_data_lease + timedelta(seconds=1))
    assert await dispatcher.deliver_due() == 0  # past DATA: the short lease does not apply
    assert (await _row(runtime, email_id)).claim_id == claimed.claim_id
    clock.advance(policy.send_lease)
    assert await dispatcher.deliver_due() == 0
    email = await _row(runtime, email_id)
    assert email.state == EmailState.REJECTED.value
    assert email.reject_reason.startswith("delivery outcome unknown")
    assert email.claim_id is None and email.sending_since is None
    clock.advance(policy.send_lease)
    assert await dispatcher.deliver_due() == 0
    assert await dispatcher.record(claimed, reply) is EmailState.REJECTED  # too late
    assert [m["to"] for m in read_messages(mail_sink.directory)] == ["nia@example.com"]
    assert await _emitted(runtime) == ["EmailQueued", "EmailRejected"]


async def test_a_requeued_claim_is_fenced_out_before_data(idle_worker, settings, mail_sink):
    """Worker A reaches RCPT and stalls; its claim expires, the row is requeued and worker B
    claims it. A's hook finds its claim gone, so A quits without DATA, and its late outcome
    changes nothing: the relay gets exactly one message, B's."""
    runtime = idle_worker
    email_id = await _queued(runtime, settings, 1403, "oz@example.com")
    rcpts: list[str] = []
    accept = mail_sink.handler.handle_RCPT

    async def counting(server, session, envelope, address, options):
        rcpts.append(address)
        return await accept(server, session, envelope, address, options)

    mail_sink.handler.handle_RCPT = counting
    clock = _Clock()
    policy = runtime.dispatcher.policy
    worker_b = Dispatcher(runtime.uow, SmtpMailer(settings), policy, clock=clock)
    b_claimed = None

    async def meanwhile():
        nonlocal b_claimed
        clock.advance(policy.pre_data_lease + timedelta(seconds=1))
        assert await worker_b.close_abandoned() == 1  # A's claim is requeued ...
        b_claimed = await worker_b.claim(email_id)  # ... and B takes the email
        assert b_claimed is not None

    mailer_a = _StallsBeforeData(SmtpMailer(settings), meanwhile)
    worker_a = Dispatcher(runtime.uow, mailer_a, policy, clock=clock)
    a_claimed = await worker_a.claim(email_id)
    assert a_claimed is not None

    a_reply = await worker_a.send(a_claimed)
    assert a_reply.code == CLAIM_LOST, a_reply
    assert rcpts == ["oz@example.com"]  # A got as far as RCPT
    assert read_messages(mail_sink.directory) == []  # and no further
    # A's late outcome neither releases nor changes B's claim.
    assert await worker_a.record(a_claimed, a_reply) is EmailState.QUEUED
    email = await _row(runtime, email_id)
    assert b_claimed is not None and email.claim_id == b_claimed.claim_id
    assert email.sending_since is not None and email.attempts == 1
    assert email.reject_reason is None

    b_reply = await worker_b.send(b_claimed)
    assert await worker_b.record(b_claimed, b_reply) is EmailState.SENT
    sent = await _row(runtime, email_id)
    # Even an outcome that claims success is too late now: nothing changes, nothing is emitted.
    assert await worker_a.record(a_claimed, Reply(250, "OK")) is EmailState.SENT
    after = await _row(runtime, email_id)
    assert (after.state, after.attempts, after.sent_at, after.reject_reason) == (
        sent.state,
        sent.attempts,
        sent.sent_at,
        sent.reject_reason,
    )
    assert after.attempts == 1
    assert rcpts == ["oz@example.com", "oz@example.com"]
    assert [m["to"] for m in read_messages(mail_sink.directory)] == ["oz@example.com"]
    assert await _emitted(runtime) == ["EmailQueued", "EmailSent"]


async def test_a_database_failure_before_data_sends_nothing_and_retries(
    idle_worker, settings, mail_sink, monkeypatch
):
    """If "DATA started" cannot be committed the mailer must not send unmarked: it quits
    before DATA and the email is retried later, the attempt not counted."""
    runtime = idle_worker
    email_id = await _queued(runtime, settings, 1404, "pia@example.com")
    clock = _Clock()
    dispatcher = Dispatcher(
        runtime.uow, SmtpMailer(settings), runtime.dispatcher.policy, clock=clock
    )

    async def database_down(claimed):
        raise OperationalError("UPDATE emails", {}, ConnectionRefusedError("database down"))

    monkeypatch.setattr(dispatcher, "mark_data_started", database_down)
    assert await dispatcher.deliver_due() == 1
    email = await _row(runtime, email_id)
    assert email.state == EmailState.QUEUED.value and email.attempts == 0
    assert email.claim_id is None and email.data_started_at is None
    assert email.reject_reason.startswith("not sent: DATA could not be marked")
    assert email.next_attempt_at > clock.now  # retried after the backoff
    assert read_messages(mail_sink.directory) == []
    assert await _emitted(runtime) == ["EmailQueued"]

    monkeypatch.undo()  # the database is back
    assert await dispatcher.deliver_due() == 0  # not due yet
    clock.advance(timedelta(seconds=settings.email_retry_backoff_max_seconds))
    assert await dispatcher.deliver_due() == 1
    email = await _row(runtime, email_id)
    assert email.state == EmailState.SENT.value and email.attempts == 1
    assert [m["to"] for m in read_messages(mail_sink.directory)] == ["pia@example.com"]
    assert await _emitted(runtime) == ["EmailQueued", "EmailSent"]


async def test_a_send_cut_off_by_its_time_limit_before_data_is_retried(idle_worker, settings):
    """The dispatcher's hard limit on a send, hit before DATA (a relay stuck at RCPT), is a
    relay problem, retried, not an unknown outcome."""

    class StuckAtRcpt:
        received: list[str] = []

        async def handle_RCPT(self, server, session, envelope, address, options):
            await asyncio.sleep(3)
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            self.received.extend(envelope.rcpt_tos)
            return "250 OK"

    runtime = idle_worker
    relay = StuckAtRcpt()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        stuck = settings.model_copy(update={"smtp_port": controller.port})
        email_id = await _queued(runtime, stuck, 1405, "quin@example.com")
        policy = DeliveryPolicy(mail_from=stuck.mail_from, send_lease=timedelta(seconds=2))
        dispatcher = Dispatcher(runtime.uow, SmtpMailer(stuck), policy)
        claimed = await dispatcher.claim(email_id)
        assert claimed is not None
        reply = await dispatcher.send(claimed)  # cut off after 1 s, at RCPT
        assert reply.code == RELAY_PROBLEM, reply
        assert await dispatcher.record(claimed, reply) is EmailState.QUEUED
        email = await _row(runtime, email_id)
        assert email.attempts == 0 and email.claim_id is None
    finally:
        controller.stop()
    assert relay.received == []


class _Log:
    """Stands in for the dispatcher's logger: what it logged, at which level."""

    def __init__(self) -> None:
        self.lines: list[dict[str, object]] = []

    def __getattr__(self, level: str):
        def write(event: str, **fields: object) -> None:
            self.lines.append({"level": level, "event": event, **fields})

        return write

    def of(self, event: str) -> list[dict[str, object]]:
        return [line for line in self.lines if line["event"] == event]


@pytest.fixture
def dispatcher_log(monkeypatch) -> _Log:
    log = _Log()
    monkeypatch.setattr(delivery, "log", log)
    return log


@pytest.fixture
async def resending_worker(settings):
    """The service with EMAIL_UNKNOWN_OUTCOME=resend and no background dispatcher."""
    resending = settings.model_copy(update={"email_unknown_outcome": UnknownOutcome.RESEND})
    runtime = bootstrap(resending)
    async with running(runtime, worker=False):
        assert runtime.dispatcher.policy.unknown_outcome is UnknownOutcome.RESEND
        yield runtime


def _identities(raw: bytes) -> tuple[str, str]:
    message = email_parsing.message_from_bytes(raw)
    return str(message["Message-ID"]), str(message[IDEMPOTENCY_HEADER])


@pytest.mark.parametrize("mail_sink", [{"drop_repeats": True}], indirect=True)
async def test_resend_mode_sends_a_send_cut_off_inside_data_again_with_the_same_ids(
    resending_worker, settings, mail_sink, dispatcher_log
):
    """EMAIL_UNKNOWN_OUTCOME=resend: a worker killed inside DATA (the relay has the message,
    the outcome was never recorded) leaves a claim that is requeued, not closed, once the
    send lease is over; the next pass sends it again with the same Message-ID and
    idempotency key. A relay that drops repeats stores it once: exactly once at the relay,
    and one EmailSent."""
    runtime = resending_worker
    email_id = await _queued(runtime, settings, 1501, "rae@example.com")
    received: list[bytes] = []
    store = mail_sink.handler.handle_DATA

    async def recording(server, session, envelope):
        received.append(envelope.original_content)
        return await store(server, session, envelope)

    mail_sink.handler.handle_DATA = recording
    dispatcher, clock, claimed, reply = await _sent_but_not_recorded(runtime, settings, email_id)
    policy = dispatcher.policy

    clock.advance(policy.pre_data_lease + timedelta(seconds=1))
    assert await dispatcher.close_abandoned() == 0  # past DATA: the short lease does not apply
    clock.advance(policy.send_lease)
    assert await dispatcher.close_abandoned() == 1
    email = await _row(runtime, email_id)
    assert email.state == EmailState.QUEUED.value
    assert email.attempts == 1  # the cut-off attempt counts
    assert email.sending_since is None and email.claim_id is None
    assert email.data_started_at is None
    assert email.next_attempt_at == clock.now
    assert email.reject_reason.startswith("delivery outcome unknown")
    assert await _emitted(runtime) == ["EmailQueued"]  # requeueing emits nothing
    [resent] = dispatcher_log.of("email_resent_after_unknown_outcome")
    assert resent["level"] == "warning"
    assert resent["email_id"] == str(email_id)
    assert resent["message_id"] == email.message_id

    assert await dispatcher.deliver_due() == 1
    sent = await _row(runtime, email_id)
    assert sent.state == EmailState.SENT.value and sent.attempts == 2
    assert sent.claim_id is None and sent.data_started_at is None
    assert await dispatcher.deliver_due() == 0
    assert await _emitted(runtime) == ["EmailQueued", "EmailSent"]
    # The dead worker's outcome, were it ever recorded, is too late and changes nothing.
    assert await dispatcher.record(claimed, reply) is EmailState.SENT
    assert await _emitted(runtime) == ["EmailQueued", "EmailSent"]

    identities = (email.message_id, email.idempotency_key)
    assert [_identities(raw) for raw in received] == [identities, identities]
    [message] = read_messages(mail_sink.directory)  # the repeat was not stored
    assert (message["message_id"], message["idempotency_key"]) == identities
    [repeat] = read_repeats(mail_sink.directory)
    assert repeat["message_id"] == email.message_id
    assert repeat["identity"] == f"x-backhaul-idempotency-key:{email.idempotency_key}"


async def test_resend_mode_closes_a_claim_cut_off_inside_data_after_the_last_attempt(
    resending_worker, settings, mail_sink
):
    """The requeue is bounded by EMAIL_MAX_ATTEMPTS: a claim that expires inside DATA on its
    last attempt is closed as outcome unknown, as in `close` mode."""
    runtime = resending_worker
    email_id = await _queued(runtime, settings, 1502, "sol@example.com")
    clock = _Clock()
    policy = runtime.dispatcher.policy
    dispatcher = Dispatcher(runtime.uow, SmtpMailer(settings), policy, clock=clock)
    for attempt in range(1, policy.max_attempts + 1):
        claimed = await dispatcher.claim(email_id)
        assert claimed is not None and claimed.attempts == attempt
        await dispatcher.send(claimed)  # ... and the worker dies every time
        clock.advance(policy.send_lease + timedelta(seconds=1))
        assert await dispatcher.close_abandoned() == 1
    email = await _row(runtime, email_id)
    assert email.state == EmailState.REJECTED.value
    assert email.attempts == policy.max_attempts
    assert email.reject_reason.startswith("delivery outcome unknown")
    assert f"gave up after {policy.max_attempts} attempts" in email.reject_reason
    assert len(read_messages(mail_sink.directory)) == policy.max_attempts  # no deduplication
    assert await _emitted(runtime) == ["EmailQueued", "EmailRejected"]


class _StallsInData:
    """A relay that takes each message but answers the first `stalls` DATA commands too
    late for the sender, so the sender cannot know whether they were delivered."""

    def __init__(self, stalls: int) -> None:
        self.stalls = stalls
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope.original_content)
        if len(self.received) <= self.stalls:
            await asyncio.sleep(2)
        return "250 OK"


@pytest.fixture
def stalling_relay(request):
    relay = _StallsInData(getattr(request, "param", 1000))
    controller = Controller(relay, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield relay, controller.port
    controller.stop()


def _cut_off_in_data(settings, port, policy, how):
    """A mailer and a policy under which a send is cut off after DATA started: the
    connection's timeout, or the dispatcher's hard time limit (half the send lease)."""
    if how == "connection lost":
        return SmtpMailer(
            settings.model_copy(update={"smtp_port": port, "smtp_timeout_seconds": 1})
        ), policy
    return SmtpMailer(settings.model_copy(update={"smtp_port": port})), replace(
        policy, send_lease=timedelta(seconds=2)
    )


@pytest.mark.parametrize("how", ["connection lost", "time limit"])
@pytest.mark.parametrize("mode", list(UnknownOutcome))
async def test_a_send_cut_off_during_data_is_closed_or_resent_until_the_last_attempt(
    idle_worker, settings, stalling_relay, dispatcher_log, mode, how
):
    """A send cut off during DATA has an unknown outcome. `close`: closed at once, never
    sent again. `resend`: retried like a temporary failure (the attempt counts, with
    backoff), with the same Message-ID, until EMAIL_MAX_ATTEMPTS; then closed."""
    relay, port = stalling_relay
    runtime = idle_worker
    email_id = await _queued(runtime, settings, 1503, "tam@example.com")
    clock = _Clock()
    mailer, policy = _cut_off_in_data(
        settings, port, replace(runtime.dispatcher.policy, unknown_outcome=mode), how
    )
    dispatcher = Dispatcher(runtime.uow, mailer, policy, clock=clock)
    attempts = policy.max_attempts if mode is UnknownOutcome.RESEND else 1
    for attempt in range(1, attempts + 1):
        assert await dispatcher.deliver_due() == 1
        email = await _row(runtime, email_id)
        assert email.attempts == attempt
        assert email.claim_id is None and email.data_started_at is None
        if attempt < attempts:
            assert email.state == EmailState.QUEUED.value
            assert email.next_attempt_at > clock.now  # after the backoff, as for a 4xx
            assert await dispatcher.deliver_due() == 0
            clock.advance(timedelta(seconds=policy.backoff_max_seconds))
    assert email.state == EmailState.REJECTED.value
    assert email.reject_reason.startswith("delivery outcome unknown")
    cause = "connection lost during DATA" if how == "connection lost" else "took longer than"
    assert cause in email.reject_reason
    if mode is UnknownOutcome.RESEND:
        assert email.reject_reason.endswith(f"gave up after {policy.max_attempts} attempts")
    else:
        assert email.reject_reason.endswith("not sent again")
    clock.advance(timedelta(seconds=policy.backoff_max_seconds))
    assert await dispatcher.deliver_due() == 0
    assert [_identities(raw) for raw in relay.received] == [
        (email.message_id, email.idempotency_key)
    ] * attempts
    resent = dispatcher_log.of("email_resent_after_unknown_outcome")
    assert len(resent) == attempts - 1
    assert all(r["level"] == "warning" and r["email_id"] == str(email_id) for r in resent)
    assert all(r["message_id"] == email.message_id for r in resent)
    assert await _emitted(runtime) == ["EmailQueued", "EmailRejected"]


@pytest.mark.parametrize("stalling_relay", [1], indirect=True)
async def test_resend_mode_delivers_after_a_connection_lost_during_data(
    resending_worker, settings, stalling_relay
):
    """The lost connection is retried; the relay answers the second time: Sent, one
    EmailSent, the relay got the same message twice."""
    relay, port = stalling_relay
    runtime = resending_worker
    email_id = await _queued(runtime, settings, 1504, "uma@example.com")
    clock = _Clock()
    mailer, policy = _cut_off_in_data(settings, port, runtime.dispatcher.policy, "connection lost")
    dispatcher = Dispatcher(runtime.uow, mailer, policy, clock=clock)
    assert await dispatcher.deliver_due() == 1
    email = await _row(runtime, email_id)
    assert email.state == EmailState.QUEUED.value and email.attempts == 1
    assert email.reject_reason.startswith("connection lost during DATA")
    clock.advance(timedelta(seconds=policy.backoff_max_seconds))
    assert await dispatcher.deliver_due() == 1
    email = await _row(runtime, email_id)
    assert email.state == EmailState.SENT.value and email.attempts == 2
    assert len(relay.received) == 2 and len(set(relay.received)) == 1
    assert await _emitted(runtime) == ["EmailQueued", "EmailSent"]
