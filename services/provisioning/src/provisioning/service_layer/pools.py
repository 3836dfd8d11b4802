"""IP pools and the DHCP servers their reservations are written to. Each handler owns its
unit of work (they are called by the API)."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy import delete, select

from backhaul_kit import clock
from backhaul_kit.errors import Conflict, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters.tables import DhcpReservation, DhcpServer, IpPool, PoolDhcpServer
from provisioning.domain import ipam
from provisioning.domain.rules import AssigneeKind, provisioning_of
from provisioning.service_layer.network import active_assignments, get_pool

log = structlog.get_logger(__name__)


async def create_dhcp_server(uow: UnitOfWork, name: str, description: str | None) -> DhcpServer:
    """Register a DHCP server; pools name the servers their reservations are written to."""
    async with uow:
        if await uow.session.scalar(select(DhcpServer.id).where(DhcpServer.name == name)):
            raise Conflict(f"a DHCP server named {name!r} already exists")
        server = DhcpServer(name=name, description=description)
        uow.session.add(server)
        await uow.session.flush()
        return server


async def create_pool(
    uow: UnitOfWork,
    *,
    name: str,
    cidr: str,
    description: str | None = None,
    dhcp_server_ids: Sequence[int] = (),
) -> IpPool:
    """Add an IP pool (IPv4 or IPv6). A malformed CIDR or an overlap with a pool is refused."""
    async with uow:
        network = ipam.parse_pool_cidr(cidr)
        session = uow.session
        if await session.scalar(select(IpPool.id).where(IpPool.name == name)):
            raise Conflict(f"an IP pool named {name!r} already exists")
        existing = [
            (p.name, ipam.parse_stored(p.cidr)) for p in await session.scalars(select(IpPool))
        ]
        clash = ipam.pools_overlap(network, existing)
        if clash is not None:
            raise Conflict(f"CIDR {network} overlaps the existing IP pool {clash!r}")
        servers = []
        for server_id in dict.fromkeys(dhcp_server_ids):
            server = await session.get(DhcpServer, server_id)
            if server is None:
                raise NotFound(f"DHCP server {server_id} not found")
            servers.append(server)
        pool = IpPool(
            name=name,
            cidr=str(network),
            version=network.version,
            description=description,
            created_at=clock.now(),
        )
        session.add(pool)
        await session.flush()
        for server in servers:
            session.add(PoolDhcpServer(pool_id=pool.id, dhcp_server_id=server.id))
        await session.flush()
        await session.refresh(pool, ["dhcp_servers"])
        return pool


async def set_pool_dhcp_servers(
    uow: UnitOfWork, pool_id: int, dhcp_server_ids: Sequence[int]
) -> IpPool:
    """Choose the pool's DHCP servers; the MAC reservations follow onto (and off) them."""
    async with uow:
        pool = await get_pool(uow, pool_id, for_update=True)
        servers = []
        for server_id in dict.fromkeys(dhcp_server_ids):
            server = await uow.session.get(DhcpServer, server_id)
            if server is None:
                raise NotFound(f"DHCP server {server_id} not found")
            servers.append(server)
        wanted = {server.id for server in servers}
        await uow.session.execute(delete(PoolDhcpServer).where(PoolDhcpServer.pool_id == pool.id))
        for server in servers:
            uow.session.add(PoolDhcpServer(pool_id=pool.id, dhcp_server_id=server.id))
        assignments = [
            a
            for a in await active_assignments(uow, pool_id=pool.id)
            if provisioning_of(AssigneeKind(a.assignee_kind)).dhcp_reservation
        ]
        now = clock.now()
        for assignment in assignments:
            held = set(
                await uow.session.scalars(
                    select(DhcpReservation.dhcp_server_id).where(
                        DhcpReservation.assignment_id == assignment.id
                    )
                )
            )
            await uow.session.execute(
                delete(DhcpReservation).where(
                    DhcpReservation.assignment_id == assignment.id,
                    DhcpReservation.dhcp_server_id.not_in(wanted),
                )
            )
            for server_id in sorted(wanted - held):
                uow.session.add(
                    DhcpReservation(
                        assignment_id=assignment.id,
                        dhcp_server_id=server_id,
                        mac=assignment.mac or "",
                        address=assignment.address,
                        account_id=assignment.account_id,
                        created_at=now,
                    )
                )
        await uow.session.flush()
        await uow.session.refresh(pool, ["dhcp_servers"])
        return pool
