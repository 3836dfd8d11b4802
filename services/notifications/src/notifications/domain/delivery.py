"""Email delivery rules: states, how an SMTP reply is classified, retry timing, identities.

Pure: no I/O. The dispatcher (service_layer/delivery.py) applies these to real SMTP replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from uuid import UUID, uuid5

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

# A fixed namespace so an email's id (and its Message-ID) follows from its idempotency key.
EMAIL_NAMESPACE = UUID("7b7c8a0e-4a0f-4b9e-9a53-0d0b8d1f6c21")


class EmailState(StrEnum):
    """Seed 003, Correspondence: the states an email shows on the account."""

    QUEUED = "queued"
    SENT = "sent"
    REJECTED = "rejected"
    INVALID = "invalid"


class Verdict(StrEnum):
    """What one delivery attempt came to."""

    SENT = "sent"
    RELAY_PROBLEM = "relay_problem"  # no verdict on the recipient yet
    CLAIM_LOST = "claim_lost"  # stopped before DATA: the row was requeued or closed meanwhile
    OUTCOME_UNKNOWN = "outcome_unknown"  # may have been delivered: see UnknownOutcome
    TEMPORARY = "temporary"  # 4xx: try again later
    PERMANENT = "permanent"  # 5xx: never retried
    INVALID = "invalid"  # the address itself cannot be delivered to


class UnknownOutcome(StrEnum):
    """EMAIL_UNKNOWN_OUTCOME: what becomes of an email whose send was cut off during SMTP
    DATA (connection lost, time limit hit, worker killed). Whether such a message was
    delivered cannot be known, so each choice gives up something.
    """

    # At most once: closed as Rejected, never sent again. A send cut off inside DATA that
    # had not in fact been delivered is lost.
    CLOSE = "close"
    # At least once: sent again, with the same Message-ID and idempotency header, within
    # the attempt limit. Exactly once only behind a relay or mailbox that drops a repeated
    # Message-ID; elsewhere the recipient may get it twice.
    RESEND = "resend"


# Pseudo reply codes for attempts that got no verdict on the recipient.
RELAY_PROBLEM = 0  # nothing was handed over (relay down, login refused): retry, uncounted
OUTCOME_UNKNOWN = -1  # lost during DATA: it may have been delivered (see UnknownOutcome)
CLAIM_LOST = -2  # not sent: the claim was taken away before DATA, its new holder sends it


@dataclass(frozen=True)
class Reply:
    """The SMTP server's answer to one attempt, or one of the pseudo codes above."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}".strip() if self.code > 0 else self.message


# RFC 3463 enhanced codes that mean the address is malformed rather than refused.
_INVALID_ADDRESS_CODES = re.compile(r"\b5\.1\.(3|6|7)\b")


def classify(reply: Reply) -> Verdict:
    """Map an SMTP reply to a verdict: 2xx sent, 4xx temporary, 5xx permanent or invalid."""
    if reply.code == RELAY_PROBLEM:
        return Verdict.RELAY_PROBLEM
    if reply.code == OUTCOME_UNKNOWN:
        return Verdict.OUTCOME_UNKNOWN
    if reply.code == CLAIM_LOST:
        return Verdict.CLAIM_LOST
    if 200 <= reply.code < 300:
        return Verdict.SENT
    if 500 <= reply.code < 600:
        if reply.code in (501, 553) or _INVALID_ADDRESS_CODES.search(reply.message):
            return Verdict.INVALID
        return Verdict.PERMANENT
    return Verdict.TEMPORARY


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def address_problem(address: str) -> str | None:
    """Why `address` cannot be delivered to, or None if it looks deliverable.

    Site-local names (`staff@isp.local`, `noc@localhost`) are refused by public-internet
    rules but a private relay delivers them, so for those only the syntax is checked.
    """
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        local, _, domain = address.rpartition("@")
        domain = domain.lower()
        site_local = any(domain == d or domain.endswith(f".{d}") for d in SPECIAL_USE_DOMAIN_NAMES)
        if not (local and site_local and _HOSTNAME.fullmatch(domain)):
            return str(exc)
        try:
            validate_email(f"{local}@example.com", check_deliverability=False)
        except EmailNotValidError as local_exc:
            return str(local_exc)
    return None


def retry_delay(attempt: int, *, base_seconds: float, max_seconds: float) -> timedelta:
    """Exponential backoff after the `attempt`-th temporary rejection (1-based), capped."""
    return timedelta(seconds=min(base_seconds * 2 ** (attempt - 1), max_seconds))


def should_retry(attempts: int, max_attempts: int) -> bool:
    """After `attempts` temporary rejections, is another attempt allowed?"""
    return attempts < max_attempts


def resend_unknown(mode: UnknownOutcome, attempts: int, max_attempts: int) -> bool:
    """After `attempts` (the cut-off one included), is an email of unknown outcome sent
    again? Only in `resend` mode, and only while attempts remain; otherwise it is closed."""
    return mode is UnknownOutcome.RESEND and should_retry(attempts, max_attempts)


def idempotency_key(trigger_event_id: UUID, recipient: str) -> str:
    """At most one email per triggering event and recipient: this is its identity."""
    return f"{trigger_event_id}:{recipient.lower()}"


def email_id_for(key: str) -> UUID:
    return uuid5(EMAIL_NAMESPACE, key)


def message_id_for(email_id: UUID, mail_from: str) -> str:
    """A deterministic Message-ID, so a receiving system can spot a duplicate too."""
    domain = mail_from.rpartition("@")[2].rstrip(">").strip() or "backhaul.local"
    return f"<{email_id}@{domain}>"
