"""Address lists: their rules, and entries refilled when a rule changes. Each handler owns
its unit of work."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select

from backhaul_kit import clock
from backhaul_kit.errors import Conflict
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters.tables import AddressList, AddressListEntry, IpAssignment
from provisioning.domain.rules import MembershipRule
from provisioning.service_layer.account_state import forget_rules
from provisioning.service_layer.network import changing, get_address_list, reconcile_lists

log = structlog.get_logger(__name__)


async def create_address_list(
    uow: UnitOfWork, *, name: str, rule: dict[str, Any], description: str | None = None
) -> AddressList:
    """Add an address list; it is filled at once from the current assignments."""
    async with changing(uow):
        parsed = MembershipRule.from_dict(rule)
        if await uow.session.scalar(select(AddressList.id).where(AddressList.name == name)):
            raise Conflict(f"an address list named {name!r} already exists")
        now = clock.now()
        address_list = AddressList(
            name=name, description=description, rule=parsed.to_dict(), created_at=now
        )
        uow.session.add(address_list)
        await uow.session.flush()
        await _refill(uow, address_list, now)
        return address_list


async def update_address_list(
    uow: UnitOfWork, list_id: int, *, rule: dict[str, Any], description: str | None
) -> AddressList:
    """Change a list's rule; its entries follow at once."""
    async with changing(uow):
        address_list = await get_address_list(uow, list_id)
        address_list.rule = MembershipRule.from_dict(rule).to_dict()
        address_list.description = description
        await uow.session.flush()
        await _refill(uow, address_list, clock.now())
        return address_list


async def _refill(uow: UnitOfWork, address_list: AddressList, now: datetime) -> None:
    forget_rules(uow)  # the rules read earlier in this transaction lack this list's
    holders = set(
        await uow.session.scalars(
            select(IpAssignment.account_id).where(IpAssignment.removed_at.is_(None))
        )
    ) | set(
        await uow.session.scalars(
            select(AddressListEntry.account_id).where(
                AddressListEntry.address_list_id == address_list.id,
                AddressListEntry.valid_to.is_(None),
            )
        )
    )
    for account_id in sorted(holders):
        await reconcile_lists(uow, account_id, now, only_list=address_list)
