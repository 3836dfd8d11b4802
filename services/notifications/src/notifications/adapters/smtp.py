"""Sending one email over SMTP (aiosmtplib) to the configured relay.

Nothing can have been delivered before the DATA command: a failure while connecting, in
EHLO / STARTTLS / AUTH, MAIL FROM or RCPT TO is safe to retry. So once the relay has
accepted the recipient, and before DATA, the mailer awaits the caller's `before_data` hook
(the dispatcher commits its "DATA started" marker there, if its claim still holds). If the
hook answers False the claim was taken away and the email is someone else's to send; if it
raises, the marker could not be committed. Either way the mailer QUITs without DATA, so the
relay discards the transaction, and reports CLAIM_LOST or RELAY_PROBLEM (not sent). A
connection lost during DATA is OUTCOME_UNKNOWN: the message may have been delivered.

What the dispatcher makes of OUTCOME_UNKNOWN is EMAIL_UNKNOWN_OUTCOME: `close` (at most
once: never sent again, so a message cut off inside DATA may be lost) or `resend` (at least
once: sent again). Every message carries a Message-ID and an `X-Backhaul-Idempotency-Key`
that follow from the email's idempotency key, and a resend is composed from the same row, so
it carries the same ones: behind a relay or mailbox that drops a repeated Message-ID, `resend`
is exactly once; elsewhere the recipient may get it twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, parseaddr
from typing import Protocol

import aiosmtplib
import structlog

from notifications.config import NotificationsSettings
from notifications.domain.delivery import CLAIM_LOST, OUTCOME_UNKNOWN, RELAY_PROBLEM, Reply

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "X-Backhaul-Idempotency-Key"

# Headers are not folded below RFC 5322's hard limit: a folded idempotency key would come
# back with whitespace in it and no longer match the one we recorded.
_POLICY = default_policy.clone(max_line_length=998)


class Mailer(Protocol):
    """Sends one message to one recipient and reports the server's reply; never raises.

    `before_data` is awaited once, after the recipient is accepted and before any of the
    message is handed over; unless it returns True nothing is sent (see the module docstring).
    """

    async def send(
        self,
        message: EmailMessage,
        recipient: str,
        *,
        before_data: Callable[[], Awaitable[bool]],
    ) -> Reply: ...


class SmtpMailer:
    """The real mailer, TLS and authentication as configured: `send` is one SMTP session per
    message; `connection()` is one session for several messages in turn (a dispatcher lane),
    which spares a connect, EHLO, STARTTLS, AUTH and QUIT per message."""

    def __init__(self, settings: NotificationsSettings) -> None:
        self.settings = settings

    @property
    def sender(self) -> str:
        return parseaddr(self.settings.mail_from)[1]

    def connection(self) -> SmtpConnection:
        """A session to send messages over one after the other; leaving it QUITs."""
        return SmtpConnection(self)

    async def send(
        self,
        message: EmailMessage,
        recipient: str,
        *,
        before_data: Callable[[], Awaitable[bool]],
    ) -> Reply:
        async with self.connection() as connection:
            return await connection.send(message, recipient, before_data=before_data)

    def client(self) -> aiosmtplib.SMTP:
        settings = self.settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            use_tls=settings.smtp_tls,
            start_tls=settings.smtp_starttls,
            cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
            timeout=settings.smtp_timeout_seconds,
        )


class SmtpConnection:
    """One SMTP session, opened on the first message and kept for the next ones.

    A message either completes its transaction (DATA answered) and leaves the session ready
    for the next MAIL FROM, or the session is closed with it: a refused recipient, an
    aborted DATA (QUIT, so the relay drops the transaction), a lost connection or a send cut
    off by the caller's time limit all end the session, and the next message opens a new
    one. A reused session the relay has meanwhile closed fails at MAIL FROM, before anything
    of the message was handed over: that message is tried once more on a fresh session.
    """

    def __init__(self, mailer: SmtpMailer) -> None:
        self.mailer = mailer
        self._client: aiosmtplib.SMTP | None = None

    async def __aenter__(self) -> SmtpConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def send(
        self,
        message: EmailMessage,
        recipient: str,
        *,
        before_data: Callable[[], Awaitable[bool]],
    ) -> Reply:
        reused = self._client is not None
        reply, stale = await self._send(message, recipient, before_data)
        if stale and reused:
            reply, _ = await self._send(message, recipient, before_data)
        return reply

    async def _send(
        self,
        message: EmailMessage,
        recipient: str,
        before_data: Callable[[], Awaitable[bool]],
    ) -> tuple[Reply, bool]:
        """The reply, and whether the session failed at MAIL FROM (perhaps a stale one)."""
        settings = self.mailer.settings
        sender = self.mailer.sender
        # Until DATA is sent nothing can have been delivered, so any failure before it is safe
        # to retry; a connection lost during DATA leaves the outcome unknown.
        data_sent = False
        at_mail = False
        aborted: Reply | None = None
        try:
            client = self._client
            if client is None:
                client = self._client = self.mailer.client()
                await client.connect()
            utf8 = not (recipient.isascii() and sender.isascii())
            if utf8 and not client.supports_extension("smtputf8"):
                # Nothing of a transaction was started: the session stays usable.
                return Reply(553, "5.6.7 non-ASCII address and the relay lacks SMTPUTF8"), False
            options = ["SMTPUTF8"] if utf8 else []
            encoding = "utf-8" if utf8 else "ascii"
            at_mail = True
            await client.mail(sender, options=options, encoding=encoding)
            at_mail = False
            await client.rcpt(recipient, encoding=encoding)
            # Flattened here with our policy: aiosmtplib's own would fold long headers.
            # Before the hook, so that nothing slow sits between the marker and DATA.
            raw = message.as_bytes(policy=_POLICY.clone(linesep="\r\n", utf8=utf8))
            aborted = await _may_start_data(before_data, settings.smtp_host)
            if aborted is not None:
                await self.close()  # QUIT: the relay drops the transaction
                return aborted, False
            data_sent = True
            response = await client.data(raw)
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
            await self.close()
            return Reply(exc.code, exc.message), False
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            if aborted is not None:
                return aborted, False  # the QUIT after an abort failed: still nothing was sent
            if data_sent:
                log.error("smtp_outcome_unknown", host=settings.smtp_host, error=repr(exc))
                return Reply(OUTCOME_UNKNOWN, f"connection lost during DATA: {exc!r}"), False
            # The relay itself (unreachable, refusing our login or sender): no verdict on
            # the recipient. RELAY_PROBLEM tells the dispatcher to try again later.
            log.warning("smtp_relay_problem", host=settings.smtp_host, error=repr(exc))
            return Reply(RELAY_PROBLEM, f"relay problem: {type(exc).__name__}: {exc}"), at_mail
        except BaseException:
            # Cut off (the dispatcher's time limit) mid-conversation: the session's state is
            # unknown, so it is dropped, without a QUIT that could wait on the relay.
            client, self._client = self._client, None
            if client is not None:
                client.close()
            raise
        return Reply(response.code, response.message), False


async def _may_start_data(before_data: Callable[[], Awaitable[bool]], host: str) -> Reply | None:
    """None if DATA may start; otherwise why not, as a reply that means "not sent"."""
    try:
        allowed = await before_data()
    except Exception as exc:  # the marker's database is unreachable: do not send unmarked
        log.warning("smtp_aborted_before_data", host=host, error=repr(exc))
        return Reply(RELAY_PROBLEM, f"not sent: DATA could not be marked as started: {exc!r}")
    if not allowed:
        log.warning("smtp_claim_lost_before_data", host=host)
        return Reply(CLAIM_LOST, "not sent: the claim was taken away before DATA")
    return None


def compose(
    *,
    mail_from: str,
    recipient: str,
    subject: str,
    body: str,
    message_id: str,
    idempotency_key: str,
    queued_at: datetime,
) -> EmailMessage:
    """Build the MIME message. Its Message-ID and idempotency header follow from its key."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = mail_from
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message[IDEMPOTENCY_HEADER] = idempotency_key
    message["Date"] = format_datetime(queued_at)
    message.set_content(body)
    return message
