"""Sending one email over SMTP (aiosmtplib) to the configured relay."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, parseaddr
from typing import Protocol

import aiosmtplib
import structlog

from notifications.config import NotificationsSettings
from notifications.domain.delivery import Reply

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "X-Backhaul-Idempotency-Key"

# Headers are not folded below RFC 5322's hard limit: a folded idempotency key would come
# back with whitespace in it and no longer match the one we recorded.
_POLICY = default_policy.clone(max_line_length=998)


class Mailer(Protocol):
    """Sends one message to one recipient and reports the server's reply; never raises."""

    async def send(self, message: EmailMessage, recipient: str) -> Reply: ...


class SmtpMailer:
    """The real mailer: one SMTP session per message, TLS and authentication as configured."""

    def __init__(self, settings: NotificationsSettings) -> None:
        self.settings = settings

    @property
    def sender(self) -> str:
        return parseaddr(self.settings.mail_from)[1]

    async def send(self, message: EmailMessage, recipient: str) -> Reply:
        settings = self.settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            _errors, response = await aiosmtplib.send(
                # Flattened here with our policy: aiosmtplib's own would fold long headers.
                message.as_bytes(policy=_POLICY.clone(linesep="\r\n")),
                sender=self.sender,
                recipients=[recipient],
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password,
                use_tls=settings.smtp_tls,
                start_tls=settings.smtp_starttls,
                cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
                timeout=settings.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return Reply(refused.code, refused.message)
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
            return Reply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            # The relay itself (unreachable, refusing our login or sender): no verdict on
            # the recipient. Code 0 tells the dispatcher to try again later.
            log.warning("smtp_relay_problem", host=settings.smtp_host, error=repr(exc))
            return Reply(0, f"relay problem: {type(exc).__name__}: {exc}")
        return Reply(250, response)


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
