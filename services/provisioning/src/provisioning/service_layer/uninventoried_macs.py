"""Uninventoried MACs: MACs an account uses that are not in the inventory (seed 003). Each
handler owns its unit of work."""

from __future__ import annotations

import structlog
from sqlalchemy import delete, select

from backhaul_kit import clock
from backhaul_kit.errors import Conflict, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters.tables import IpAssignment, UninventoriedMac
from provisioning.domain.rules import AssigneeKind, normalise_mac
from provisioning.service_layer.assignments import end_assignment
from provisioning.service_layer.network import changing, get_replica, lock_accounts, reconcile

log = structlog.get_logger(__name__)


async def add_uninventoried_mac(uow: UnitOfWork, account_id: int, mac: str) -> UninventoriedMac:
    """Record an uninventoried MAC on an account (before or without an IP)."""
    async with uow:
        await get_replica(uow, account_id)
        value = normalise_mac(mac)
        known = await uow.session.scalar(
            select(UninventoriedMac.account_id).where(UninventoriedMac.mac == value)
        )
        if known is not None:
            raise Conflict(f"MAC {value} is already an uninventoried MAC of account {known}")
        row = UninventoriedMac(account_id=account_id, mac=value, created_at=clock.now())
        uow.session.add(row)
        await uow.session.flush()
        return row


async def delete_uninventoried_mac(uow: UnitOfWork, mac_id: int, *, actor: str) -> None:
    """Delete an uninventoried MAC; its IP assignments end (and are kept as history)."""
    async with changing(uow):
        row = await uow.session.get(UninventoriedMac, mac_id)
        if row is None:
            raise NotFound(f"uninventoried MAC {mac_id} not found")
        await lock_accounts(uow, row.account_id)
        now = clock.now()
        holders = await uow.session.scalars(
            select(IpAssignment).where(
                IpAssignment.mac == row.mac,
                IpAssignment.assignee_kind == AssigneeKind.UNINVENTORIED_MAC.value,
                IpAssignment.removed_at.is_(None),
            )
        )
        for assignment in holders.all():
            await end_assignment(uow, assignment, now, reason="removed")
        await uow.session.execute(delete(UninventoriedMac).where(UninventoriedMac.id == mac_id))
        await reconcile(uow, row.account_id, now)
        log.info("uninventoried_mac_deleted", mac=row.mac, actor=actor)
