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


# -- the status catalogue -----------------------------------------------------------------
# A status is about no account, so its events go under the subject `account-status:<id>`
# (the Kafka key too): every event of one status stays in order, and consumers that look
# for an account id in the subject find none and skip it.


def status_subject(status_id: int) -> str:
    """The envelope subject (and Kafka key) of a status's catalogue events."""
    return f"account-status:{status_id}"


@register
class AccountStatusDefined(_AccountsEvent):
    """A status as it now is: emitted when it is created, edited, and once for the statuses
    that existed before this event did (the defaults). An upsert: the latest one wins."""

    event_type = "AccountStatusDefined"

    status_id: int
    name: str
    activates_account: bool
    icon: str
    colour: str
    is_default: bool = Field(
        default=False, description="Lead, Active and Inactive: never deleted, flag fixed"
    )
    defined_at: datetime

    @property
    def subject(self) -> str:
        return status_subject(self.status_id)


@register
class AccountStatusDeleted(_AccountsEvent):
    """A custom status was deleted (only one that no account uses can be)."""

    event_type = "AccountStatusDeleted"

    status_id: int
    name: str
    deleted_at: datetime

    @property
    def subject(self) -> str:
        return status_subject(self.status_id)


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
