"""Events of the notifications service."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from backhaul_contracts.envelope import Event, register
from backhaul_contracts.topics import NOTIFICATIONS_EVENTS


class _EmailEvent(Event):
    topic = NOTIFICATIONS_EVENTS

    account_id: int
    email_id: UUID
    recipient: str
    subject: str
    trigger_event_type: str
    trigger_event_id: UUID
    disconnection_id: UUID | None = None


@register
class EmailQueued(_EmailEvent):
    event_type = "EmailQueued"

    queued_at: datetime


@register
class EmailSent(_EmailEvent):
    event_type = "EmailSent"

    sent_at: datetime
    message_id: str | None = None


@register
class EmailRejected(_EmailEvent):
    event_type = "EmailRejected"

    rejected_at: datetime
    reason: str
    permanent: bool = True
    invalid: bool = False  # the address cannot be delivered to (state Invalid, never sent)
