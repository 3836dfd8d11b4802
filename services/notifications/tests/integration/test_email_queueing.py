"""Triggered email queued from real Kafka events and sent to a real SMTP server: who is
mailed, the triggers, duplicates, retries, rejections and a relay outage."""

from decimal import Decimal
from uuid import uuid4

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from backhaul_contracts.common import StatusRef
from backhaul_contracts.events.accounts import (
    AccountStatusChanged,
    ContactChanged,
)
from backhaul_contracts.events.billing import InvoiceIssued
from backhaul_contracts.events.scheduler import ScheduledEventFailed
from backhaul_contracts.topics import NOTIFICATIONS_EVENTS
from backhaul_devstack.smtp_sink import read_messages
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.testing import eventually, read_events
from notifications.adapters.tables import Email

from .queued_emails import (
    ACTIVE,
    NOW,
    _contact,
    _created,
    _disconnected,
    _emails,
    _publish,
    _queue_directly,
    _until_state,
)

pytestmark = pytest.mark.integration


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
