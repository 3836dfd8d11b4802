"""Events of the provisioning service."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field

from backhaul_contracts.common import ReleasedIp
from backhaul_contracts.envelope import Event, register
from backhaul_contracts.topics import PROVISIONING_EVENTS


class _ProvisioningEvent(Event):
    topic = PROVISIONING_EVENTS


@register
class IpAssigned(_ProvisioningEvent):
    event_type = "IpAssigned"

    account_id: int
    assignment_id: UUID
    address: str
    pool_id: int | None = None
    assigned_at: datetime
    assignee_kind: str = Field(
        default="account",
        description="account, inventory_item, radius_account or uninventoried_mac",
    )
    mac: str | None = None
    radius_username: str | None = None
    soft: bool = False


@register
class IpReleased(_ProvisioningEvent):
    event_type = "IpReleased"

    account_id: int
    assignment_id: UUID
    address: str
    released_at: datetime
    pool_id: int | None = None
    assignee_kind: str = "account"
    reason: str | None = Field(default=None, description="removed, moved, replaced, disconnected")


@register
class AddressListEntryAdded(_ProvisioningEvent):
    event_type = "AddressListEntryAdded"

    account_id: int
    address_list_id: int
    address_list: str
    address: str


@register
class AddressListEntryRemoved(_ProvisioningEvent):
    event_type = "AddressListEntryRemoved"

    account_id: int
    address_list_id: int
    address_list: str
    address: str


@register
class AccountNetworkReleased(_ProvisioningEvent):
    """Everything the network held for a disconnected account is released."""

    event_type = "AccountNetworkReleased"

    account_id: int
    disconnection_id: UUID
    released_at: datetime
    released_ips: list[ReleasedIp] = Field(default_factory=list)
    removed_list_entries: int = 0
    removed_dhcp_reservations: int = 0
    removed_radius_usernames: list[str] = Field(default_factory=list)
