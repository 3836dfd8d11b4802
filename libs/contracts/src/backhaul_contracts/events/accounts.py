"""Events and commands of the accounts service."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field

from backhaul_contracts.common import Address, ContactRef, Proration, StatusRef
from backhaul_contracts.envelope import Event, register
from backhaul_contracts.topics import ACCOUNTS_COMMANDS, ACCOUNTS_EVENTS


class _AccountsEvent(Event):
    topic = ACCOUNTS_EVENTS


@register
class AccountCreated(_AccountsEvent):
    event_type = "AccountCreated"

    account_id: int
    name: str
    account_type: str | None = None
    status: StatusRef
    serviceable_address: Address | None = None
    mailing_address: Address | None = None
    parent_account_id: int | None = None
    billing_day: int = Field(default=1, ge=1, le=28)
    primary_contact: ContactRef | None = None
    created_at: datetime


@register
class AccountUpdated(_AccountsEvent):
    event_type = "AccountUpdated"

    account_id: int
    name: str
    parent_account_id: int | None = None
    serviceable_address: Address | None = None
    mailing_address: Address | None = None
    billing_day: int = Field(default=1, ge=1, le=28)
    changed_fields: list[str]


@register
class AccountStatusChanged(_AccountsEvent):
    event_type = "AccountStatusChanged"

    account_id: int
    previous_status: StatusRef
    status: StatusRef
    reason: str | None = None
    changed_by: str
    parent_account_id: int | None = None
    changed_at: datetime


@register
class AccountDisconnected(_AccountsEvent):
    event_type = "AccountDisconnected"

    account_id: int
    account_name: str
    disconnection_id: UUID
    disconnected_at: datetime
    disconnected_by: str
    previous_status: StatusRef
    status: StatusRef
    released_address: Address | None = None
    proration: Proration = Proration.INHERIT
    parent_account_id: int | None = None
    primary_contact: ContactRef | None = None


@register
class ContactChanged(_AccountsEvent):
    """A contact was added, edited, made primary or removed."""

    event_type = "ContactChanged"

    account_id: int
    account_name: str
    parent_account_id: int | None = None
    contact: ContactRef
    removed: bool = False


class _AccountsCommand(Event):
    topic = ACCOUNTS_COMMANDS


@register
class ChangeAccountStatus(_AccountsCommand):
    event_type = "ChangeAccountStatus"

    account_id: int
    status_id: int
    reason: str | None = None
    requested_by: str


@register
class DisconnectAccount(_AccountsCommand):
    event_type = "DisconnectAccount"

    account_id: int
    proration: Proration = Proration.INHERIT
    requested_by: str
