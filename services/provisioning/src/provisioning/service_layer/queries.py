"""Read-side queries of the provisioning API, including what routers read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select

from backhaul_kit.errors import InvalidInput, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters import taken_blocks
from provisioning.adapters.tables import (
    AddressList,
    AddressListChange,
    AddressListEntry,
    DhcpReservation,
    DhcpServer,
    IpAssignment,
    IpPool,
    RadiusAccount,
    RadiusGroup,
    UninventoriedMac,
)
from provisioning.domain import ipam
from provisioning.service_layer.network import get_address_list, get_pool, get_replica


@dataclass(frozen=True)
class PoolView:
    pool: IpPool
    usage: ipam.Utilisation


async def _pool_view(uow: UnitOfWork, pool: IpPool) -> PoolView:
    network = ipam.parse_stored(pool.cidr)
    used = await taken_blocks.used_addresses(uow.session, pool.id, network.version)
    return PoolView(pool, ipam.Utilisation(size=ipam.pool_size(network), used=used))


async def list_pools(uow: UnitOfWork) -> list[PoolView]:
    """Every pool with its utilisation."""
    async with uow:
        pools = (await uow.session.scalars(select(IpPool).order_by(IpPool.id))).all()
        return [await _pool_view(uow, pool) for pool in pools]


async def pool_detail(uow: UnitOfWork, pool_id: int) -> PoolView:
    """One pool with its utilisation."""
    async with uow:
        return await _pool_view(uow, await get_pool(uow, pool_id))


async def next_free(uow: UnitOfWork, pool_id: int, prefix_length: int | None) -> str:
    """What the next assignment in the pool would get (nothing is reserved)."""
    async with uow:
        pool = await get_pool(uow, pool_id)
        return ipam.render(await taken_blocks.next_free(uow.session, pool, prefix_length))


async def list_dhcp_servers(uow: UnitOfWork) -> list[DhcpServer]:
    """Every DHCP server."""
    async with uow:
        return list((await uow.session.scalars(select(DhcpServer).order_by(DhcpServer.id))).all())


async def list_reservations(uow: UnitOfWork, server_id: int) -> list[DhcpReservation]:
    """The server's current reservations."""
    async with uow:
        if await uow.session.get(DhcpServer, server_id) is None:
            raise NotFound(f"DHCP server {server_id} not found")
        rows = await uow.session.scalars(
            select(DhcpReservation)
            .where(DhcpReservation.dhcp_server_id == server_id)
            .order_by(DhcpReservation.id)
        )
        return list(rows.all())


async def account_assignments(
    uow: UnitOfWork, account_id: int, *, include_history: bool
) -> list[IpAssignment]:
    """The account's current assignments, or every one it ever had (newest first)."""
    async with uow:
        known = await uow.session.scalar(
            select(func.count())
            .select_from(IpAssignment)
            .where(IpAssignment.account_id == account_id)
        )
        if not known:
            await get_replica(uow, account_id)  # 404 for an account provisioning never heard of
        statement = select(IpAssignment).where(IpAssignment.account_id == account_id)
        if not include_history:
            statement = statement.where(IpAssignment.removed_at.is_(None))
        rows = await uow.session.scalars(
            statement.order_by(IpAssignment.assigned_at.desc(), IpAssignment.address)
        )
        return list(rows.all())


async def list_address_lists(uow: UnitOfWork) -> list[tuple[AddressList, int]]:
    """Every address list with its number of current entries."""
    async with uow:
        counts = dict(
            (
                await uow.session.execute(
                    select(AddressListEntry.address_list_id, func.count())
                    .where(AddressListEntry.valid_to.is_(None))
                    .group_by(AddressListEntry.address_list_id)
                )
            ).all()
        )
        lists = (await uow.session.scalars(select(AddressList).order_by(AddressList.id))).all()
        return [(lst, int(counts.get(lst.id, 0))) for lst in lists]


async def address_list(uow: UnitOfWork, list_id: int) -> tuple[AddressList, int]:
    """One address list with its number of current entries."""
    async with uow:
        lst = await get_address_list(uow, list_id)
        count = await uow.session.scalar(
            select(func.count())
            .select_from(AddressListEntry)
            .where(AddressListEntry.address_list_id == list_id, AddressListEntry.valid_to.is_(None))
        )
        return lst, int(count or 0)


def _held_at(at: datetime) -> ColumnElement[bool]:
    return (AddressListEntry.valid_from <= at) & or_(
        AddressListEntry.valid_to.is_(None), AddressListEntry.valid_to > at
    )


async def list_entries(
    uow: UnitOfWork, list_id: int, *, at: datetime | None = None
) -> tuple[AddressList, list[AddressListEntry], int]:
    """A list's entries now (or at `at`), and the feed position they reflect (for the ETag)."""
    async with uow:
        lst = await get_address_list(uow, list_id)
        statement = select(AddressListEntry).where(AddressListEntry.address_list_id == list_id)
        statement = statement.where(
            AddressListEntry.valid_to.is_(None) if at is None else _held_at(at)
        )
        rows = await uow.session.scalars(statement.order_by(AddressListEntry.address))
        seq = await uow.session.scalar(
            select(func.max(AddressListChange.seq)).where(
                AddressListChange.address_list_id == list_id
            )
        )
        return lst, list(rows.all()), int(seq or 0)


async def changes(
    uow: UnitOfWork, *, since: int, list_id: int | None = None, limit: int = 1000
) -> tuple[list[tuple[AddressListChange, str]], int]:
    """Changes after the cursor, oldest first; the new cursor is the last one returned."""
    async with uow:
        if list_id is not None:
            await get_address_list(uow, list_id)
        statement = (
            select(AddressListChange, AddressList.name)
            .join(AddressList, AddressList.id == AddressListChange.address_list_id)
            .where(AddressListChange.seq > since)
        )
        if list_id is not None:
            statement = statement.where(AddressListChange.address_list_id == list_id)
        result = await uow.session.execute(statement.order_by(AddressListChange.seq).limit(limit))
        rows = [(change, name) for change, name in result.all()]
        cursor = rows[-1][0].seq if rows else since
        return rows, cursor


async def memberships(
    uow: UnitOfWork, address: str, at: datetime | None
) -> list[tuple[AddressListEntry, str]]:
    """Which lists held this address (at a moment, or ever), with their spans."""
    async with uow:
        try:
            value = ipam.render(ipam.parse_stored(address))
        except ValueError:
            raise InvalidInput(f"malformed address {address!r}") from None
        statement = (
            select(AddressListEntry, AddressList.name)
            .join(AddressList, AddressList.id == AddressListEntry.address_list_id)
            .where(AddressListEntry.address == value)
        )
        if at is not None:
            statement = statement.where(_held_at(at))
        rows = await uow.session.execute(statement.order_by(AddressListEntry.valid_from))
        return [(entry, name) for entry, name in rows.all()]


async def account_entries(uow: UnitOfWork, account_id: int) -> list[tuple[AddressListEntry, str]]:
    """The lists the account's addresses are on now."""
    async with uow:
        await get_replica(uow, account_id)
        rows = await uow.session.execute(
            select(AddressListEntry, AddressList.name)
            .join(AddressList, AddressList.id == AddressListEntry.address_list_id)
            .where(AddressListEntry.account_id == account_id, AddressListEntry.valid_to.is_(None))
            .order_by(AddressList.name, AddressListEntry.address)
        )
        return [(entry, name) for entry, name in rows.all()]


async def radius_accounts(uow: UnitOfWork, account_id: int) -> list[RadiusAccount]:
    """The account's RADIUS logins that are not deleted."""
    async with uow:
        await get_replica(uow, account_id)
        rows = await uow.session.scalars(
            select(RadiusAccount)
            .where(RadiusAccount.account_id == account_id, RadiusAccount.deleted_at.is_(None))
            .order_by(RadiusAccount.id)
        )
        return list(rows.all())


async def radius_groups(uow: UnitOfWork) -> list[RadiusGroup]:
    """RADIUS groups in the order FreeRADIUS reads them."""
    async with uow:
        rows = await uow.session.scalars(
            select(RadiusGroup).order_by(RadiusGroup.priority, RadiusGroup.id)
        )
        return list(rows.all())


async def uninventoried_macs(uow: UnitOfWork, account_id: int) -> list[UninventoriedMac]:
    """The account's uninventoried MACs."""
    async with uow:
        await get_replica(uow, account_id)
        rows = await uow.session.scalars(
            select(UninventoriedMac)
            .where(UninventoriedMac.account_id == account_id)
            .order_by(UninventoriedMac.id)
        )
        return list(rows.all())
