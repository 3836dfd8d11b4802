"""Request and response bodies of the notifications API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from notifications.domain.delivery import EmailState
from notifications.domain.triggers import Audience

Category = Field(
    default=None,
    min_length=1,
    max_length=100,
    description="Message category; only contacts who chose it receive the message. "
    "None: an account message every targeted contact receives.",
)


TEMPLATE_HELP = (
    "Jinja2 (sandboxed, plain text). Variables: account.id, account.name, "
    "account.parent_account_id; contact.name, contact.email; event.<any field of the event>; "
    "event_type; occurred_at. Unknown variables are refused when the trigger is saved."
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TriggerIn(_In):
    name: str = Field(min_length=1, max_length=200)
    event_type: str = Field(
        min_length=1, max_length=100, description="An event type, e.g. AccountDisconnected"
    )
    conditions: dict[str, Any] = Field(
        default_factory=dict,
        max_length=20,
        description='Payload conditions, e.g. {"status.name": ["Vacation"]}: a value or any of '
        "a list; all must hold (strings compare case-insensitively)",
    )
    audience: Audience = Audience.PRIMARY_CONTACT
    category: str | None = Category
    subject_template: str = Field(min_length=1, max_length=1000, description=TEMPLATE_HELP)
    body_template: str = Field(min_length=1, max_length=100_000, description=TEMPLATE_HELP)
    enabled: bool = True
    address: str | None = Field(
        default=None,
        max_length=320,
        description="Staff audience only: send here instead of STAFF_EMAIL",
    )


class TriggerPatch(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    event_type: str | None = Field(default=None, min_length=1, max_length=100)
    conditions: dict[str, Any] | None = Field(default=None, max_length=20)
    audience: Audience | None = None
    category: str | None = Category
    subject_template: str | None = Field(default=None, min_length=1, max_length=1000)
    body_template: str | None = Field(default=None, min_length=1, max_length=100_000)
    enabled: bool | None = None
    address: str | None = Field(default=None, max_length=320)


class TriggerOut(_Out):
    id: int
    name: str
    event_type: str
    conditions: dict[str, Any]
    audience: Audience
    category: str | None
    subject_template: str
    body_template: str
    enabled: bool
    address: str | None
    shipped: bool
    created_at: datetime
    updated_at: datetime


class EmailOut(_Out):
    id: UUID
    account_id: int
    recipient: str
    subject: str
    state: EmailState
    reject_reason: str | None
    attempts: int
    category: str | None
    queued_at: datetime
    sent_at: datetime | None
    rejected_at: datetime | None
    next_attempt_at: datetime | None
    trigger_id: int | None
    trigger_event_type: str
    trigger_event_id: UUID
    disconnection_id: UUID | None
    message_id: str
    body: str | None = None


class ContactOut(_Out):
    contact_id: int
    account_id: int
    name: str
    email: str | None
    is_primary: bool
    message_categories: list[str]


class PreviewIn(_In):
    event: dict[str, Any] = Field(description="A sample payload of the trigger's event type")
    account_id: int = 1
    account_name: str = Field(default="Sample account", max_length=200)
    parent_account_id: int | None = None
    contact_name: str = Field(default="Sample contact", max_length=200)
    contact_email: str = Field(default="contact@example.com", max_length=320)


class PreviewOut(BaseModel):
    subject: str
    body: str
    matches: bool = Field(description="Whether the trigger's conditions hold for this sample")
