"""Claiming due emails and handing claims back: the dispatcher's conditional UPDATEs.

A claim marks a row as being sent (`sending_since`, a `claim_id`, `attempts + 1`) only while
it is Queued and unclaimed, so of several replicas claiming one row exactly one gets it.
Claiming several rows is one statement that applies those conditions to each row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast
from uuid import UUID

from sqlalchemy import Table, update
from sqlalchemy.ext.asyncio import AsyncSession

from notifications.adapters.tables import Email
from notifications.domain.delivery import EmailState

_EMAILS = cast(Table, Email.__table__)
_COLUMNS = (
    _EMAILS.c.id,
    _EMAILS.c.account_id,
    _EMAILS.c.recipient,
    _EMAILS.c.subject,
    _EMAILS.c.body,
    _EMAILS.c.message_id,
    _EMAILS.c.idempotency_key,
    _EMAILS.c.queued_at,
    _EMAILS.c.attempts,
    _EMAILS.c.trigger_event_id,
    _EMAILS.c.correlation_id,
    _EMAILS.c.trace_headers,
)


@dataclass(frozen=True)
class Claimed:
    """A snapshot of a claimed row: what the send needs, with no session attached."""

    id: UUID
    claim_id: UUID
    account_id: int
    recipient: str
    subject: str
    body: str
    message_id: str
    idempotency_key: str
    queued_at: datetime
    attempts: int
    trigger_event_id: UUID
    correlation_id: UUID | None
    trace_headers: dict[str, str]
    claimed_at: datetime | None = None


async def claim(
    session: AsyncSession, email_ids: Sequence[UUID], *, claim_id: UUID, now: datetime
) -> list[Claimed]:
    """Claim those of `email_ids` still Queued and unclaimed, with one UPDATE .. RETURNING;
    returns them in the order asked (a row another replica holds is left out).

    The rows share the claim token: the fence is (row, token), and a new claim of any of
    them draws a new token, so a token still names one attempt of each row."""
    rows = (
        await session.execute(
            update(_EMAILS)
            .where(
                _EMAILS.c.id.in_(email_ids),
                _EMAILS.c.state == EmailState.QUEUED.value,
                _EMAILS.c.sending_since.is_(None),
            )
            .values(
                sending_since=now,
                claim_id=claim_id,
                data_started_at=None,
                attempts=_EMAILS.c.attempts + 1,
            )
            .returning(*_COLUMNS)
        )
    ).all()
    by_id = {
        row.id: Claimed(
            id=row.id,
            claim_id=claim_id,
            account_id=row.account_id,
            recipient=row.recipient,
            subject=row.subject,
            body=row.body,
            message_id=row.message_id,
            idempotency_key=row.idempotency_key,
            queued_at=row.queued_at,
            attempts=row.attempts,
            trigger_event_id=row.trigger_event_id,
            correlation_id=row.correlation_id,
            trace_headers=dict(row.trace_headers or {}),
            claimed_at=now,
        )
        for row in rows
    }
    return [by_id[i] for i in email_ids if i in by_id]


async def release(session: AsyncSession, taken: Sequence[Claimed]) -> None:
    """Hand back claims whose send never started, as if never taken (the attempt is not
    counted), each only while its claim still holds its row before DATA."""
    for claim_id in {c.claim_id for c in taken}:
        await session.execute(
            update(_EMAILS)
            .where(
                _EMAILS.c.id.in_([c.id for c in taken if c.claim_id == claim_id]),
                _EMAILS.c.claim_id == claim_id,
                _EMAILS.c.state == EmailState.QUEUED.value,
                _EMAILS.c.data_started_at.is_(None),
            )
            .values(sending_since=None, claim_id=None, attempts=_EMAILS.c.attempts - 1)
        )
