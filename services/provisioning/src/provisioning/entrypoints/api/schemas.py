"""Request and response bodies of the provisioning API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from provisioning.domain.rules import AssigneeKind


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- IPAM -------------------------------------------------------------------------------------


class DhcpServerIn(_In):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=400)


class DhcpServerOut(_Out):
    id: int
    name: str
    description: str | None = None


class PoolIn(_In):
    name: str = Field(min_length=1, max_length=100)
    cidr: str = Field(min_length=1, max_length=64, examples=["10.20.0.0/24", "2001:db8::/64"])
    description: str | None = Field(default=None, max_length=400)
    dhcp_server_ids: list[int] = Field(
        default_factory=list, description="DHCP servers that get a reservation per MAC assignment"
    )


class PoolDhcpServersIn(_In):
    dhcp_server_ids: list[int]


class PoolOut(BaseModel):
    id: int
    name: str
    cidr: str
    version: int
    description: str | None = None
    size: int = Field(description="Assignable addresses (IPv4 leaves out network and broadcast)")
    used: int
    free: int
    utilisation_percent: float
    dhcp_server_ids: list[int]
    created_at: datetime


class NextFreeOut(BaseModel):
    pool_id: int
    address: str


class DhcpReservationOut(_Out):
    id: int
    dhcp_server_id: int
    mac: str
    address: str
    account_id: int
    assignment_id: UUID
    created_at: datetime


# -- assignments --------------------------------------------------------------------------------


class AssigneeIn(_In):
    """Who gets the IP; the account itself when left out."""

    kind: AssigneeKind = AssigneeKind.ACCOUNT
    mac: str | None = Field(
        default=None, max_length=32, description="inventory_item, uninventoried_mac"
    )
    inventory_item_id: int | None = Field(default=None, description="inventory_item")
    radius_account_id: int | None = Field(default=None, description="radius_account")


class AssignmentIn(_In):
    pool_id: int
    address: str | None = Field(
        default=None,
        max_length=64,
        description="An address, or a subnet in CIDR form; null takes the next free one",
    )
    prefix_length: int | None = Field(
        default=None, ge=0, le=128, description="With a null address: the next free subnet"
    )
    assignee: AssigneeIn = Field(default_factory=AssigneeIn)
    soft: bool = Field(
        default=False, description="Learnt rather than configured; yields to a hard one"
    )
    description: str | None = Field(default=None, max_length=400)


class MoveIn(_In):
    account_id: int
    assignee: AssigneeIn = Field(default_factory=AssigneeIn)


class AssignmentOut(_Out):
    id: UUID
    address: str
    pool_id: int
    account_id: int
    assignee_kind: str
    mac: str | None = None
    inventory_item_id: int | None = None
    radius_account_id: int | None = None
    soft: bool
    description: str | None = None
    assigned_at: datetime
    assigned_by: str
    removed_at: datetime | None = None
    removed_reason: str | None = None
    moved_to: UUID | None = None


class UninventoriedMacIn(_In):
    mac: str = Field(min_length=1, max_length=32)


class UninventoriedMacOut(_Out):
    id: int
    account_id: int
    mac: str
    created_at: datetime


# -- address lists ------------------------------------------------------------------------------


class AddressListIn(_In):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\"\\\r\n]+$")
    rule: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Every criterion given must hold: activating (bool), status_ids ([int]), "
            "data_service (bool), service_ids ([int]), delinquent (bool)"
        ),
        examples=[{"activating": True}, {"status_ids": [5]}, {"service_ids": [3]}],
    )
    description: str | None = Field(default=None, max_length=400)


class AddressListUpdate(_In):
    rule: dict[str, Any]
    description: str | None = Field(default=None, max_length=400)


class AddressListOut(BaseModel):
    id: int
    name: str
    description: str | None = None
    rule: dict[str, Any]
    entry_count: int
    created_at: datetime


class EntryOut(_Out):
    address: str
    account_id: int
    address_list_id: int
    assignment_id: UUID
    valid_from: datetime
    valid_to: datetime | None = None


class MembershipOut(EntryOut):
    address_list: str


class ChangeOut(BaseModel):
    seq: int
    address_list_id: int
    address_list: str
    action: Literal["add", "remove"]
    address: str
    account_id: int
    at: datetime


class ChangesOut(BaseModel):
    changes: list[ChangeOut]
    cursor: int = Field(description="Pass as `since` next time")


# -- RADIUS ------------------------------------------------------------------------------------


class RadiusAccountIn(_In):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[^\s#'\"\\]+$")
    password: str = Field(min_length=1, max_length=128)


class RadiusAccountOut(_Out):
    id: int
    account_id: int
    username: str
    created_at: datetime


class ReplyAttributeIn(_In):
    attribute: str = Field(min_length=1, max_length=64, examples=["Mikrotik-Rate-Limit"])
    op: str = Field(default=":=", max_length=2)
    value: str = Field(min_length=1, max_length=253, examples=["256k/256k"])


class RadiusGroupIn(_In):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\s'\"\\]+$")
    rule: dict[str, Any] = Field(examples=[{"status_ids": [5]}])
    attributes: list[ReplyAttributeIn] = Field(min_length=1)
    priority: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Lower is read first; data-service groups are 10, so status groups win",
    )
    fall_through: bool = Field(default=False, description="Also apply the next matching group")


class RadiusGroupUpdate(_In):
    rule: dict[str, Any]
    attributes: list[ReplyAttributeIn] = Field(min_length=1)
    priority: int = Field(default=1, ge=0, le=1000)
    fall_through: bool = False


class RadiusGroupOut(_Out):
    id: int
    name: str
    kind: str
    service_id: int | None = None
    rule: dict[str, Any]
    priority: int
    fall_through: bool
    attributes: list[dict[str, str]]
