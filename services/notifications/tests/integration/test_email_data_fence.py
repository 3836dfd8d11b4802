"""The fence before SMTP DATA: a send cut off before DATA, a claim requeued under a stalled
worker, a DATA marker that cannot be committed, a time limit hit before DATA."""

import asyncio
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.exc import OperationalError

from backhaul_devstack.kafka_broker import free_port
from backhaul_devstack.smtp_sink import read_messages
from notifications.adapters.smtp import SmtpMailer
from notifications.domain.delivery import (
    CLAIM_LOST,
    RELAY_PROBLEM,
    EmailState,
    Reply,
)
from notifications.service_layer.delivery import DeliveryPolicy, Dispatcher

from .queued_emails import _Clock, _emitted, _queued, _row

pytestmark = pytest.mark.integration


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
