"""Request and response bodies of the accounts API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from backhaul_contracts.common import Proration


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class StatusIn(_In):
    name: str = Field(min_length=1, max_length=100)
    activates_account: bool
    icon: str = Field(default="circle", min_length=1, max_length=50)
    colour: str = Field(
        default="#9E9E9E", max_length=20, description="#RGB, #RRGGBB or a picker name"
    )


class StatusOut(_Out):
    id: int
    name: str
    activates_account: bool
    icon: str
    colour: str
    is_default: bool


class StatusPatch(_In):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    activates_account: bool | None = None
    icon: str | None = Field(default=None, min_length=1, max_length=50)
    colour: str | None = Field(default=None, max_length=20)


class GroupIn(_In):
    name: str = Field(min_length=1, max_length=100)


class GroupOut(_Out):
    id: int
    name: str


class AccountTypeIn(_In):
    name: str = Field(min_length=1, max_length=100)


class AccountTypeOut(_Out):
    id: int
    name: str


class AddressIn(_In):
    line1: str = Field(min_length=1, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    region: str | None = Field(default=None, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)
    country: str = Field(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")


class AddressOut(_Out):
    id: int | None = None
    line1: str
    line2: str | None = None
    city: str
    region: str | None = None
    postal_code: str | None = None
    country: str


class ContactIn(_In):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=40)
    message_categories: list[str] = Field(default_factory=list, max_length=20)


class ContactCreate(ContactIn):
    primary: bool = Field(
        default=False, description="The first contact is primary anyway; a second is a 409"
    )


class ContactPatch(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=40)
    message_categories: list[str] | None = Field(default=None, max_length=20)


class ContactOut(_Out):
    id: int
    name: str
    email: str | None
    phone: str | None
    is_primary: bool
    message_categories: list[str]


class AccountIn(_In):
    id: int | None = Field(default=None, ge=1, le=2**31 - 1, description="Omit for an automatic id")
    name: str = Field(min_length=1, max_length=200)
    status_id: int | None = Field(default=None, description="Defaults to Lead")
    account_type_id: int | None = None
    parent_account_id: int | None = None
    billing_day: int = Field(default=1, ge=1, le=28)
    serviceable_address: AddressIn | None = None
    mailing_address: AddressIn | None = None
    primary_contact: ContactIn | None = None
    group_ids: list[int] = Field(default_factory=list, max_length=50)
    custom_fields: dict[str, Any] = Field(default_factory=dict, max_length=100)


class AccountPatch(_In):
    """Only the fields sent are changed; `null` clears an optional one."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    account_type_id: int | None = None
    parent_account_id: int | None = None
    billing_day: int | None = Field(default=None, ge=1, le=28)
    serviceable_address: AddressIn | None = None
    mailing_address: AddressIn | None = None
    group_ids: list[int] | None = Field(default=None, max_length=50)
    custom_fields: dict[str, Any] | None = Field(default=None, max_length=100)


class AccountOut(_Out):
    id: int
    name: str
    status: StatusOut
    account_type: AccountTypeOut | None
    parent_account_id: int | None
    billing_day: int
    serviceable_address: AddressOut | None
    mailing_address: dict[str, Any] | None
    custom_fields: dict[str, Any]
    groups: list[GroupOut]
    groups_label: str = Field(description='What the header shows: names, or "[No Groups]"')
    contacts: list[ContactOut]
    created_at: datetime
    activated_at: datetime | None
    disconnected_at: datetime | None


class AccountPage(BaseModel):
    items: list[AccountOut]
    total: int
    limit: int
    offset: int


class StatusChangeIn(_In):
    status_id: int
    reason: str | None = Field(default=None, max_length=500)


class DisconnectIn(_In):
    proration: Proration = Field(
        default=Proration.INHERIT,
        description="Final-invoice proration: inherit the billing setting, none, or credit_unused",
    )


class StepOut(_Out):
    step: str
    state: str
    updated_at: datetime
    result: dict[str, Any]
    error: str | None


class DisconnectionOut(BaseModel):
    id: UUID
    account_id: int
    disconnected_at: datetime
    disconnected_by: str
    address: dict[str, Any] | None
    previous_status_id: int
    status_id: int
    proration: str
    progress: str
    steps: list[StepOut]


class LogOut(_Out):
    id: int
    at: datetime
    actor: str
    action: str
    changes: dict[str, Any]


class NoteIn(_In):
    body: str = Field(min_length=1, max_length=10_000)


class NoteOut(_Out):
    id: int
    body: str
    author: str
    created_at: datetime


class TaskIn(_In):
    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    assignee: str | None = Field(default=None, max_length=200)
    due_at: datetime | None = None


class TaskPatch(_In):
    completed: bool | None = None
    assignee: str | None = Field(default=None, max_length=200)


class TaskOut(_Out):
    id: int
    title: str
    description: str | None
    assignee: str | None
    due_at: datetime | None
    completed: bool
    completed_at: datetime | None
    created_by: str
    created_at: datetime


class SettingsOut(BaseModel):
    disconnect_status: StatusOut


class SettingsIn(_In):
    disconnect_status_id: int
