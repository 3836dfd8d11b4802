"""Settings of the notifications service."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from backhaul_kit.config import ServiceSettings
from notifications.domain.delivery import UnknownOutcome, address_problem


class NotificationsSettings(ServiceSettings):
    service_name: str = "notifications"
    http_port: int = 8005

    # The SMTP relay every email goes through (the development mail sink by default).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: bool = Field(default=False, description="Implicit TLS from the first byte (465)")
    smtp_starttls: bool = Field(default=False, description="Upgrade with STARTTLS (587)")
    smtp_ca_file: Path | None = Field(
        default=None, description="PEM bundle to trust for the relay's certificate (private CA)"
    )
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    mail_from: str = "Backhaul <noreply@backhaul.local>"

    # Where staff-facing messages (a scheduled event failed) go; None switches them off.
    staff_email: str | None = "staff@backhaul.local"

    # Delivery: temporary (4xx) rejections are retried with exponential backoff.
    email_max_attempts: int = Field(default=5, ge=1)
    email_retry_backoff_seconds: float = Field(default=60.0, ge=0)
    email_retry_backoff_max_seconds: float = Field(default=3600.0, ge=0)
    email_poll_interval_seconds: float = Field(default=1.0, gt=0)
    email_batch_size: int = Field(default=50, ge=1)
    # Emails sent at once by one process. Each send waits mostly on the relay and the
    # database, so a few in flight multiply a process's rate; each has its own claim.
    email_send_concurrency: int = Field(default=4, ge=1, le=64)
    # A send cut off during SMTP DATA may or may not have been delivered. `close`: closed as
    # Rejected, never sent again (at most once; such a send may be lost). `resend`: sent
    # again with the same Message-ID, within EMAIL_MAX_ATTEMPTS (at least once; exactly
    # once behind a relay or mailbox that drops a repeated Message-ID).
    email_unknown_outcome: UnknownOutcome = UnknownOutcome.CLOSE
    # A send that reached DATA this long ago and never recorded its outcome belongs to a
    # worker that died mid-send: its outcome is unknown (see EMAIL_UNKNOWN_OUTCOME).
    email_send_lease_seconds: float = Field(default=300.0, gt=0)
    # A claim that has not reached DATA this long after it was taken belongs to a worker that
    # died (or stalled) before handing anything over: it is requeued and sent again. Unset:
    # 2 x SMTP_TIMEOUT_SECONDS. Every step before DATA (connect, EHLO, STARTTLS, AUTH, MAIL,
    # RCPT) answers in milliseconds from a healthy relay and ends the attempt when it hits
    # SMTP_TIMEOUT_SECONDS, so a live worker is past RCPT well within twice that. Being
    # wrong is safe, only wasteful: a worker whose claim was requeued finds it gone before
    # DATA and quits without sending.
    email_pre_data_lease_seconds: float | None = Field(default=None, gt=0)

    @property
    def pre_data_lease_seconds(self) -> float:
        """EMAIL_PRE_DATA_LEASE_SECONDS, or its default derived from the SMTP timeout."""
        if self.email_pre_data_lease_seconds is not None:
            return self.email_pre_data_lease_seconds
        return 2 * self.smtp_timeout_seconds

    @field_validator("staff_email")
    @classmethod
    def _deliverable_staff_email(cls, value: str | None) -> str | None:
        if value is not None and (problem := address_problem(value)) is not None:
            raise ValueError(f"STAFF_EMAIL {value!r}: {problem}")
        return value

    @model_validator(mode="after")
    def _one_tls_mode(self) -> "NotificationsSettings":
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError("choose SMTP_TLS (implicit TLS) or SMTP_STARTTLS, not both")
        if self.email_send_lease_seconds < 4 * self.smtp_timeout_seconds:
            # A send is cut off at half the lease; it needs room for several SMTP round trips.
            raise ValueError("EMAIL_SEND_LEASE_SECONDS must be at least 4 x SMTP_TIMEOUT_SECONDS")
        if self.pre_data_lease_seconds < self.smtp_timeout_seconds:
            # Shorter than one SMTP step, live workers would be fenced out routinely.
            raise ValueError("EMAIL_PRE_DATA_LEASE_SECONDS must be at least SMTP_TIMEOUT_SECONDS")
        if self.pre_data_lease_seconds > self.email_send_lease_seconds:
            raise ValueError(
                "EMAIL_PRE_DATA_LEASE_SECONDS must not exceed EMAIL_SEND_LEASE_SECONDS"
            )
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("SMTP_USERNAME and SMTP_PASSWORD go together")
        return self


@lru_cache
def get_settings() -> NotificationsSettings:
    return NotificationsSettings()
