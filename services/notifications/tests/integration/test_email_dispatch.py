"""The email dispatcher against a real database and SMTP relay: replicas sharing the
queue, a round's concurrent sends, graceful stops."""

import asyncio

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from backhaul_contracts import Envelope
from backhaul_devstack.kafka_broker import free_port
from backhaul_devstack.smtp_sink import read_messages
from backhaul_kit.testing import eventually, running
from notifications.adapters.smtp import SmtpMailer
from notifications.adapters.tables import Email
from notifications.bootstrap import bootstrap
from notifications.domain.delivery import (
    EmailState,
)
from notifications.service_layer.delivery import Dispatcher

from .queued_emails import _disconnected, _queue_directly, _queued

pytestmark = pytest.mark.integration


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
