"""The SMTP mailer against real relays: STARTTLS with authentication, a slow one, and the
hook before DATA that can stop a send."""

import asyncio
import shutil
import socket
import ssl
import subprocess
from datetime import UTC, datetime

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from notifications.adapters.smtp import SmtpMailer, compose
from notifications.config import NotificationsSettings
from notifications.domain.delivery import (
    CLAIM_LOST,
    OUTCOME_UNKNOWN,
    RELAY_PROBLEM,
    Verdict,
    classify,
)

pytestmark = pytest.mark.integration


class Relay:
    """Accepts mail only after STARTTLS and AUTH as relay-user."""

    def __init__(self):
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope.original_content)
        return "250 queued as 42"


def _authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"relay-user",
        b"s3cret",
    )
    return AuthResult(success=ok)


@pytest.fixture
def relay(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the relay's certificate")
    cert, key = tmp_path / "relay.pem", tmp_path / "relay.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Relay()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticate,
    )
    controller.start()
    yield handler, port, cert
    controller.stop()


async def _allow() -> bool:
    return True


def _message():
    return compose(
        mail_from="ISP <billing@isp.example>",
        recipient="ada@example.com",
        subject="Hi",
        body="Hello",
        message_id="<1@isp.example>",
        idempotency_key="k:ada@example.com",
        queued_at=datetime.now(UTC),
    )


async def test_sends_over_starttls_with_authentication(relay):
    handler, port, cert = relay
    settings = NotificationsSettings(
        smtp_port=port,
        smtp_starttls=True,
        smtp_username="relay-user",
        smtp_password="s3cret",
        smtp_ca_file=cert,
        mail_from="ISP <billing@isp.example>",
    )
    reply = await SmtpMailer(settings).send(_message(), "ada@example.com", before_data=_allow)
    assert classify(reply) is Verdict.SENT, reply
    [raw] = handler.received
    assert b"X-Backhaul-Idempotency-Key: k:ada@example.com" in raw


@pytest.mark.parametrize(
    "changes",
    [
        {"smtp_password": "wrong"},  # refused login
        {"smtp_starttls": False},  # the relay insists on TLS
        {"smtp_ca_file": None},  # an untrusted certificate is not accepted
    ],
)
async def test_relay_problems_are_not_blamed_on_the_recipient(relay, changes):
    handler, port, cert = relay
    base = {
        "smtp_port": port,
        "smtp_starttls": True,
        "smtp_username": "relay-user",
        "smtp_password": "s3cret",
        "smtp_ca_file": cert,
        "smtp_timeout_seconds": 3,
    }
    reply = await SmtpMailer(NotificationsSettings(**(base | changes))).send(
        _message(), "ada@example.com", before_data=_allow
    )
    # Code 0: the relay failed, so the email stays queued and the attempt does not count.
    assert reply.code == RELAY_PROBLEM, reply
    assert reply.message.startswith("relay problem")
    assert handler.received == []


async def test_a_connection_lost_during_data_is_an_unknown_outcome(tmp_path):
    """The relay took the message but its answer never came: report it as unknown, so the
    dispatcher closes the email instead of sending it a second time."""

    class SlowToAnswer:
        received: list[bytes] = []

        async def handle_DATA(self, server, session, envelope):
            self.received.append(envelope.original_content)
            await asyncio.sleep(3)
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = SlowToAnswer()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = NotificationsSettings(smtp_port=port, smtp_timeout_seconds=1)
        reply = await SmtpMailer(settings).send(_message(), "ada@example.com", before_data=_allow)
    finally:
        controller.stop()
    assert reply.code == OUTCOME_UNKNOWN
    assert classify(reply) is Verdict.OUTCOME_UNKNOWN
    assert len(handler.received) == 1  # it did arrive: resending would duplicate it


class Recording:
    """A relay that notes each command it answered: what reached it, and in which order."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        envelope.rcpt_tos.append(address)
        self.steps.append("RCPT")
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.steps.append("DATA")
        return "250 OK"


async def _claim_lost() -> bool:
    return False


async def _database_down() -> bool:
    raise ConnectionRefusedError("the database is down")


@pytest.mark.parametrize(
    ("before_data", "code", "verdict"),
    [
        (_allow, 250, Verdict.SENT),
        (_claim_lost, CLAIM_LOST, Verdict.CLAIM_LOST),
        (_database_down, RELAY_PROBLEM, Verdict.RELAY_PROBLEM),
    ],
)
async def test_the_hook_runs_after_rcpt_and_only_true_lets_data_start(before_data, code, verdict):
    """Unless the hook allows it, the mailer quits after RCPT: the relay gets no DATA, and
    the reply says nothing was sent (claim lost, or retry later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Recording()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:

        async def hook() -> bool:
            handler.steps.append("hook")
            return await before_data()

        reply = await SmtpMailer(NotificationsSettings(smtp_port=port)).send(
            _message(), "ada@example.com", before_data=hook
        )
    finally:
        controller.stop()
    assert reply.code == code, reply
    assert classify(reply) is verdict
    sent = verdict is Verdict.SENT
    assert handler.steps == ["RCPT", "hook", "DATA"] if sent else ["RCPT", "hook"]
    if not sent:
        assert reply.message.startswith("not sent")
