"""Sends cut off after SMTP DATA started, whose outcome is unknown: closed
(EMAIL_UNKNOWN_OUTCOME=close) or sent again with the same ids (resend)."""

import asyncio
import email as email_parsing
from dataclasses import replace
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from backhaul_contracts import Envelope
from backhaul_devstack.kafka_broker import free_port
from backhaul_devstack.smtp_sink import read_messages, read_repeats
from backhaul_kit.testing import eventually, running
from notifications.adapters.smtp import IDEMPOTENCY_HEADER, SmtpMailer
from notifications.adapters.tables import Email
from notifications.bootstrap import bootstrap
from notifications.domain.delivery import (
    EmailState,
    UnknownOutcome,
    Verdict,
    classify,
)
from notifications.service_layer import delivery
from notifications.service_layer.delivery import Dispatcher

from .queued_emails import (
    _Clock,
    _created,
    _disconnected,
    _emails,
    _emitted,
    _queue_directly,
    _queued,
    _row,
    _until_state,
)

pytestmark = pytest.mark.integration


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
