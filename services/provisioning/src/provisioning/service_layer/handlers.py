"""Provisioning's handlers: one per command or event. Each owns its unit of work.

A handler changes a source of truth (the replica, an assignment, a rule) and then lets
`network.reconcile` bring list entries and FreeRADIUS rows in line (see network.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from backhaul_contracts import Envelope
from backhaul_contracts.common import ReleasedIp, ServiceKind, StatusRef
from backhaul_contracts.events import provisioning as events
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
)
from backhaul_contracts.events.billing import (
    AccountDelinquencyChanged,
    AccountServiceAdded,
    AccountServiceRemoved,
)
from backhaul_kit.errors import Conflict, InvalidInput, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters import taken_blocks
from provisioning.adapters.tables import (
    AccountDataService,
    AccountReplica,
    AddressList,
    AddressListEntry,
    DhcpReservation,
    DhcpServer,
    IpAssignment,
    IpPool,
    NetworkRelease,
    PoolDhcpServer,
    RadGroupReply,
    RadiusAccount,
    RadiusGroup,
    UninventoriedMac,
)
from provisioning.domain import ipam
from provisioning.domain.rules import (
    AssigneeKind,
    MembershipRule,
    ReplyAttribute,
    normalise_mac,
    provisioning_of,
    rate_limit_attributes,
    reply_attribute,
)
from provisioning.service_layer.network import (
    active_assignments,
    changing,
    get_address_list,
    get_assignment,
    get_pool,
    get_replica,
    lock_accounts,
    reconcile,
    reconcile_lists,
    reconcile_radius,
    replica_for_update,
    sync_radius_user,
)

log = structlog.get_logger(__name__)

STATUS_GROUP_PRIORITY = 1  # status groups are read first: a suspended reply wins
SERVICE_GROUP_PRIORITY = 10


def _now() -> datetime:
    return datetime.now(UTC)


# -- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignee:
    """Who gets the IP. `mac` for the MAC kinds, `radius_account_id` for a RADIUS account."""

    kind: AssigneeKind = AssigneeKind.ACCOUNT
    mac: str | None = None
    inventory_item_id: int | None = None
    radius_account_id: int | None = None


@dataclass(frozen=True)
class AssignIp:
    account_id: int
    pool_id: int
    address: str | None = None
    prefix_length: int | None = None
    assignee: Assignee = Assignee()
    soft: bool = False
    description: str | None = None


# -- IP pools and DHCP servers ----------------------------------------------------------------


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
            created_at=_now(),
        )
        session.add(pool)
        await session.flush()
        for server in servers:
            session.add(PoolDhcpServer(pool_id=pool.id, dhcp_server_id=server.id))
        await session.flush()
        await session.refresh(pool, ["dhcp_servers"])
        return pool


# -- IP assignments ---------------------------------------------------------------------------


async def _resolve_assignee(
    uow: UnitOfWork, account_id: int, assignee: Assignee, now: datetime
) -> tuple[str | None, RadiusAccount | None]:
    """Check the assignee belongs to the account; returns its MAC and RADIUS account."""
    kind = assignee.kind
    if kind is AssigneeKind.ACCOUNT:
        return None, None
    if kind is AssigneeKind.RADIUS_ACCOUNT:
        if assignee.radius_account_id is None:
            raise InvalidInput("a RADIUS account assignee needs radius_account_id")
        radius_account = await uow.session.get(RadiusAccount, assignee.radius_account_id)
        if radius_account is None or radius_account.deleted_at is not None:
            raise NotFound(f"RADIUS account {assignee.radius_account_id} not found")
        if radius_account.account_id != account_id:
            raise Conflict(
                f"RADIUS account {radius_account.username!r} belongs to account "
                f"{radius_account.account_id}, not {account_id}"
            )
        return None, radius_account
    if not assignee.mac:
        raise InvalidInput(f"a {kind.value} assignee needs a mac")
    mac = normalise_mac(assignee.mac)
    if kind is AssigneeKind.INVENTORY_ITEM and assignee.inventory_item_id is None:
        raise InvalidInput("an inventory_item assignee needs inventory_item_id")
    if kind is AssigneeKind.UNINVENTORIED_MAC:
        known = (
            await uow.session.execute(select(UninventoriedMac).where(UninventoriedMac.mac == mac))
        ).scalar_one_or_none()
        if known is None:
            uow.session.add(UninventoriedMac(account_id=account_id, mac=mac, created_at=now))
        elif known.account_id != account_id:
            raise Conflict(f"MAC {mac} is an uninventoried MAC of account {known.account_id}")
    return mac, None


async def _assign(uow: UnitOfWork, command: AssignIp, *, actor: str, now: datetime) -> IpAssignment:
    """The assignment itself, inside the caller's unit of work."""
    session = uow.session
    await lock_accounts(uow, command.account_id)
    replica = await get_replica(uow, command.account_id)
    if replica.disconnected_at is not None:
        raise Conflict(f"account {command.account_id} is disconnected")
    pool = await get_pool(uow, command.pool_id, for_update=True)
    pool_network = ipam.parse_stored(pool.cidr)
    mac, radius_account = await _resolve_assignee(uow, command.account_id, command.assignee, now)
    search_start = await taken_blocks.search_start(session, pool)
    if command.address is not None:
        network = ipam.parse_assignment(command.address, pool_network)
        if command.prefix_length is not None and command.prefix_length != network.prefixlen:
            raise InvalidInput(
                f"prefix_length /{command.prefix_length} contradicts the address {command.address}"
            )
        while (other := await taken_blocks.overlapping(session, pool.id, network)) is not None:
            held = ipam.parse_stored(other.address)
            if other.soft and not command.soft and held == network:
                # A soft assignment (learnt, not configured) yields to a real one.
                await _end(uow, other, now, reason="replaced")
                continue
            what = "address" if ipam.is_host(held) else "subnet"
            raise Conflict(
                f"{what} {other.address} of pool {pool.name!r} is already assigned "
                f"(to {other.assignee_kind} of account {other.account_id})"
            )
    else:
        network = await taken_blocks.next_free(session, pool, command.prefix_length)
    kind = command.assignee.kind
    rules = provisioning_of(kind)
    if rules.dhcp_reservation and not ipam.is_host(network):
        raise InvalidInput(f"a DHCP reservation holds one address, not the subnet {network}")
    if mac is not None:
        holder = await session.scalar(
            select(IpAssignment.address).where(
                IpAssignment.mac == mac,
                IpAssignment.version == network.version,
                IpAssignment.removed_at.is_(None),
            )
        )
        if holder is not None:
            raise Conflict(f"MAC {mac} already holds the address {holder}")
    keys = ipam.range_keys(network)
    assignment = IpAssignment(
        id=uuid4(),
        pool_id=pool.id,
        address=ipam.render(network),
        version=network.version,
        range_first=keys.first,
        range_last=keys.last,
        range_after=keys.after,
        account_id=command.account_id,
        assignee_kind=kind.value,
        mac=mac,
        inventory_item_id=command.assignee.inventory_item_id,
        radius_account_id=radius_account.id if radius_account else None,
        soft=command.soft,
        description=command.description,
        assigned_at=now,
        assigned_by=actor,
    )
    session.add(assignment)
    lowest_free = command.address is None and ipam.is_host(network)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"address {assignment.address} is already assigned") from None
    await taken_blocks.assigned(session, pool, keys, lowest_free=lowest_free, start=search_start)
    if rules.dhcp_reservation:
        for server in pool.dhcp_servers:
            session.add(
                DhcpReservation(
                    assignment_id=assignment.id,
                    dhcp_server_id=server.id,
                    mac=mac or "",
                    address=assignment.address,
                    account_id=assignment.account_id,
                    created_at=now,
                )
            )
    await uow.emit(
        events.IpAssigned(
            account_id=assignment.account_id,
            assignment_id=assignment.id,
            address=assignment.address,
            pool_id=pool.id,
            assigned_at=now,
            assignee_kind=kind.value,
            mac=mac,
            radius_username=radius_account.username if radius_account else None,
            soft=assignment.soft,
        ),
        subject=assignment.account_id,
    )
    return assignment


async def _end(uow: UnitOfWork, assignment: IpAssignment, now: datetime, *, reason: str) -> int:
    """End an assignment (kept as history); drop its DHCP reservations and temporary MAC.

    Returns how many DHCP reservations went. List entries and RADIUS replies follow in the
    reconcile the caller runs.
    """
    session = uow.session
    assignment.removed_at = now
    assignment.removed_reason = reason
    taken_blocks.freed(assignment)
    removed = await session.execute(
        delete(DhcpReservation).where(DhcpReservation.assignment_id == assignment.id)
    )
    await session.flush()
    if assignment.assignee_kind == AssigneeKind.UNINVENTORIED_MAC.value and assignment.mac:
        still_used = await session.scalar(
            select(IpAssignment.id)
            .where(IpAssignment.mac == assignment.mac, IpAssignment.removed_at.is_(None))
            .limit(1)
        )
        if still_used is None:  # seed 003: once its IP is removed, the MAC disappears
            await session.execute(
                delete(UninventoriedMac).where(UninventoriedMac.mac == assignment.mac)
            )
    await uow.emit(
        events.IpReleased(
            account_id=assignment.account_id,
            assignment_id=assignment.id,
            address=assignment.address,
            released_at=now,
            pool_id=assignment.pool_id,
            assignee_kind=assignment.assignee_kind,
            reason=reason,
        ),
        subject=assignment.account_id,
    )
    return int(getattr(removed, "rowcount", 0) or 0)


async def assign_ip(uow: UnitOfWork, command: AssignIp, *, actor: str) -> IpAssignment:
    """Assign an address (or the next free one) to an assignee and provision it (seed 003)."""
    async with changing(uow):
        now = _now()
        assignment = await _assign(uow, command, actor=actor, now=now)
        await reconcile(uow, command.account_id, now)
        return assignment


async def remove_assignment(uow: UnitOfWork, assignment_id: UUID, *, actor: str) -> IpAssignment:
    """End an assignment: its address is free again and its provisioning is undone."""
    async with changing(uow):
        assignment = await get_assignment(uow, assignment_id)
        if assignment.removed_at is not None:
            raise Conflict(f"IP assignment {assignment_id} was already removed")
        now = _now()
        await _end(uow, assignment, now, reason="removed")
        await reconcile(uow, assignment.account_id, now)
        log.info("ip_assignment_removed", assignment_id=str(assignment_id), actor=actor)
        return assignment


async def move_assignment(
    uow: UnitOfWork, assignment_id: UUID, *, account_id: int, assignee: Assignee, actor: str
) -> IpAssignment:
    """Move an address to another assignee (of this or another account), keeping history.

    The old assignment ends as `moved` and a new one starts with the same address, so each
    assignee's history shows when it held it.
    """
    async with changing(uow):
        old = await get_assignment(uow, assignment_id)
        if old.removed_at is not None:
            raise Conflict(f"IP assignment {assignment_id} was already removed")
        await lock_accounts(uow, old.account_id, account_id)
        now = _now()
        await _end(uow, old, now, reason="moved")
        await uow.session.flush()
        new = await _assign(
            uow,
            AssignIp(
                account_id=account_id,
                pool_id=old.pool_id,
                address=old.address,
                assignee=assignee,
                soft=old.soft,
                description=old.description,
            ),
            actor=actor,
            now=now,
        )
        old.moved_to = new.id
        await reconcile(uow, old.account_id, now)
        if account_id != old.account_id:
            await reconcile(uow, account_id, now)
        return new


async def load_assignment(uow: UnitOfWork, assignment_id: UUID) -> IpAssignment:
    """One assignment, current or ended, in its own transaction."""
    async with uow:
        return await get_assignment(uow, assignment_id)


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
        row = UninventoriedMac(account_id=account_id, mac=value, created_at=_now())
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
        now = _now()
        holders = await uow.session.scalars(
            select(IpAssignment).where(
                IpAssignment.mac == row.mac,
                IpAssignment.assignee_kind == AssigneeKind.UNINVENTORIED_MAC.value,
                IpAssignment.removed_at.is_(None),
            )
        )
        for assignment in holders.all():
            await _end(uow, assignment, now, reason="removed")
        await uow.session.execute(delete(UninventoriedMac).where(UninventoriedMac.id == mac_id))
        await reconcile(uow, row.account_id, now)
        log.info("uninventoried_mac_deleted", mac=row.mac, actor=actor)


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
        now = _now()
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


# -- address lists ----------------------------------------------------------------------------


async def create_address_list(
    uow: UnitOfWork, *, name: str, rule: dict[str, Any], description: str | None = None
) -> AddressList:
    """Add an address list; it is filled at once from the current assignments."""
    async with changing(uow):
        parsed = MembershipRule.from_dict(rule)
        if await uow.session.scalar(select(AddressList.id).where(AddressList.name == name)):
            raise Conflict(f"an address list named {name!r} already exists")
        now = _now()
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
        await _refill(uow, address_list, _now())
        return address_list


async def _refill(uow: UnitOfWork, address_list: AddressList, now: datetime) -> None:
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


# -- RADIUS accounts and groups ---------------------------------------------------------------


async def create_radius_account(
    uow: UnitOfWork, account_id: int, *, username: str, password: str
) -> RadiusAccount:
    """Add a RADIUS login to an account; FreeRADIUS can authenticate it at once."""
    async with uow:
        replica = await get_replica(uow, account_id)
        if replica.disconnected_at is not None:
            raise Conflict(f"account {account_id} is disconnected")
        if await uow.session.scalar(
            select(RadiusAccount.id).where(
                RadiusAccount.username == username, RadiusAccount.deleted_at.is_(None)
            )
        ):
            raise Conflict(f"RADIUS username {username!r} is already taken")
        radius_account = RadiusAccount(
            account_id=account_id, username=username, password=password, created_at=_now()
        )
        uow.session.add(radius_account)
        await uow.session.flush()
        await sync_radius_user(uow, radius_account)
        return radius_account


async def delete_radius_account(uow: UnitOfWork, radius_account_id: int) -> RadiusAccount:
    """Delete a RADIUS login: its IP assignments end and its FreeRADIUS rows go."""
    async with changing(uow):
        radius_account = await uow.session.get(RadiusAccount, radius_account_id)
        if radius_account is None or radius_account.deleted_at is not None:
            raise NotFound(f"RADIUS account {radius_account_id} not found")
        now = _now()
        radius_account.deleted_at = now
        assignments = await uow.session.scalars(
            select(IpAssignment).where(
                IpAssignment.radius_account_id == radius_account.id,
                IpAssignment.removed_at.is_(None),
            )
        )
        for assignment in assignments.all():
            await _end(uow, assignment, now, reason="removed")
        await sync_radius_user(uow, radius_account)  # deleted: its rows go
        await reconcile_lists(uow, radius_account.account_id, now)
        return radius_account


def _attributes(raw: Sequence[dict[str, str]]) -> list[ReplyAttribute]:
    return [reply_attribute(a["attribute"], a.get("op", ":="), a["value"]) for a in raw]


async def _write_group_replies(uow: UnitOfWork, group: RadiusGroup) -> None:
    await uow.session.execute(delete(RadGroupReply).where(RadGroupReply.groupname == group.name))
    for attribute in _attributes(group.attributes):
        uow.session.add(
            RadGroupReply(
                groupname=group.name,
                attribute=attribute.attribute,
                op=attribute.op,
                value=attribute.value,
            )
        )
    if group.fall_through:
        uow.session.add(
            RadGroupReply(groupname=group.name, attribute="Fall-Through", op="=", value="Yes")
        )
    await uow.session.flush()


async def _resync_all_radius_users(uow: UnitOfWork) -> None:
    for radius_account in (
        await uow.session.scalars(select(RadiusAccount).where(RadiusAccount.deleted_at.is_(None)))
    ).all():
        await sync_radius_user(uow, radius_account)


async def create_radius_group(
    uow: UnitOfWork,
    *,
    name: str,
    rule: dict[str, Any],
    attributes: Sequence[dict[str, str]],
    priority: int = STATUS_GROUP_PRIORITY,
    fall_through: bool = False,
) -> RadiusGroup:
    """Add a RADIUS group (e.g. `suspended` for some statuses) with its reply attributes.

    Members follow the rule. Groups are read in priority order and, unless a group falls
    through, the first matching group's reply is the one the NAS gets.
    """
    async with uow:
        parsed = MembershipRule.from_dict(rule)
        checked = _attributes(attributes)
        if await uow.session.scalar(select(RadiusGroup.id).where(RadiusGroup.name == name)):
            raise Conflict(f"a RADIUS group named {name!r} already exists")
        group = RadiusGroup(
            name=name,
            kind="status" if parsed.status_ids or parsed.activating is not None else "custom",
            rule=parsed.to_dict(),
            priority=priority,
            fall_through=fall_through,
            attributes=[a.__dict__ for a in checked],
            created_at=_now(),
        )
        uow.session.add(group)
        await uow.session.flush()
        await _write_group_replies(uow, group)
        await _resync_all_radius_users(uow)
        return group


async def update_radius_group(
    uow: UnitOfWork,
    group_id: int,
    *,
    rule: dict[str, Any],
    attributes: Sequence[dict[str, str]],
    priority: int,
    fall_through: bool,
) -> RadiusGroup:
    """Change a group's rule, replies or priority; FreeRADIUS sees it on the next request."""
    async with uow:
        group = await uow.session.get(RadiusGroup, group_id)
        if group is None:
            raise NotFound(f"RADIUS group {group_id} not found")
        if group.kind == "data_service":
            raise Conflict(
                f"RADIUS group {group.name!r} follows its data service's speeds; "
                "change the service in billing instead"
            )
        parsed = MembershipRule.from_dict(rule)
        checked = _attributes(attributes)
        group.rule = parsed.to_dict()
        group.kind = "status" if parsed.status_ids or parsed.activating is not None else "custom"
        group.attributes = [a.__dict__ for a in checked]
        group.priority = priority
        group.fall_through = fall_through
        await uow.session.flush()
        await _write_group_replies(uow, group)
        await _resync_all_radius_users(uow)
        return group


async def _ensure_service_group(uow: UnitOfWork, service: AccountServiceAdded) -> None:
    """A RADIUS group per data service, its rate limit from the service's speeds."""
    ref = service.service
    attributes = [a.__dict__ for a in rate_limit_attributes(ref.download_kbps, ref.upload_kbps)]
    group = (
        await uow.session.execute(
            select(RadiusGroup).where(RadiusGroup.service_id == ref.service_id)
        )
    ).scalar_one_or_none()
    if group is None:
        group = RadiusGroup(
            name=f"service-{ref.service_id}",
            kind="data_service",
            service_id=ref.service_id,
            rule={"service_ids": [ref.service_id]},
            priority=SERVICE_GROUP_PRIORITY,
            fall_through=False,
            attributes=attributes,
            created_at=_now(),
        )
        uow.session.add(group)
    elif group.attributes == attributes:
        return
    group.attributes = attributes  # the speeds may have changed in the catalogue
    await uow.session.flush()
    await _write_group_replies(uow, group)


# -- events from accounts and billing ---------------------------------------------------------


def _set_status(replica: AccountReplica, status: StatusRef, now: datetime) -> None:
    replica.status_id = status.id
    replica.status_name = status.name
    replica.activates = status.activates_account
    replica.updated_at = now


async def on_account_created(event: AccountCreated, envelope: Envelope, uow: UnitOfWork) -> None:
    """Start the account's replica with its status."""
    async with changing(uow):
        replica = await replica_for_update(uow, event.account_id)
        _set_status(replica, event.status, _now())
        await uow.session.flush()
        await reconcile(uow, event.account_id, _now())


async def on_status_changed(
    event: AccountStatusChanged, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Entries and RADIUS groups follow the new status."""
    async with changing(uow):
        now = _now()
        replica = await replica_for_update(uow, event.account_id)
        _set_status(replica, event.status, now)
        if event.status.activates_account:
            replica.disconnected_at = None  # back in service (accounts does the same)
        await uow.session.flush()
        await reconcile(uow, event.account_id, now)


async def on_delinquency_changed(
    event: AccountDelinquencyChanged, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Lists and groups with a delinquency rule follow billing's verdict."""
    async with changing(uow):
        now = _now()
        replica = await replica_for_update(uow, event.account_id)
        replica.delinquent = event.delinquent
        replica.updated_at = now
        await uow.session.flush()
        await reconcile(uow, event.account_id, now)


async def on_service_added(event: AccountServiceAdded, envelope: Envelope, uow: UnitOfWork) -> None:
    """A data service joins the account: its RADIUS group and lists follow."""
    if event.service.kind is not ServiceKind.DATA:
        return
    async with changing(uow):
        now = _now()
        await replica_for_update(uow, event.account_id)
        if await uow.session.get(AccountDataService, event.account_service_id) is None:
            uow.session.add(
                AccountDataService(
                    account_service_id=event.account_service_id,
                    account_id=event.account_id,
                    service_id=event.service.service_id,
                    service_name=event.service.name,
                    download_kbps=event.service.download_kbps,
                    upload_kbps=event.service.upload_kbps,
                    added_at=event.added_at,
                )
            )
        await uow.session.flush()
        await _ensure_service_group(uow, event)
        await reconcile(uow, event.account_id, now)


async def on_service_removed(
    event: AccountServiceRemoved, envelope: Envelope, uow: UnitOfWork
) -> None:
    """A data service leaves the account: its RADIUS group and lists follow."""
    if event.service.kind is not ServiceKind.DATA:
        return
    async with changing(uow):
        await uow.session.execute(
            delete(AccountDataService).where(
                AccountDataService.account_service_id == event.account_service_id
            )
        )
        await reconcile(uow, event.account_id, _now())


async def on_account_disconnected(
    event: AccountDisconnected, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Release everything the network holds for the account, once per disconnection (seed 004).

    Ends every IP assignment (history kept), removes list entries, DHCP reservations and
    RADIUS rows, and emits one AccountNetworkReleased, even when nothing was assigned, so
    the disconnect's progress completes.
    """
    async with changing(uow):
        session = uow.session
        if await session.get(NetworkRelease, event.disconnection_id) is not None:
            log.info("network_release_repeated", disconnection_id=str(event.disconnection_id))
            return
        now = _now()
        replica = await replica_for_update(uow, event.account_id)
        _set_status(replica, event.status, now)
        replica.disconnected_at = event.disconnected_at
        await session.flush()
        released: list[ReleasedIp] = []
        dhcp_removed = 0
        for assignment in await active_assignments(uow, account_id=event.account_id):
            dhcp_removed += await _end(uow, assignment, now, reason="disconnected")
            released.append(
                ReleasedIp(
                    assignment_id=assignment.id,
                    address=assignment.address,
                    pool_id=assignment.pool_id,
                )
            )
        await session.execute(
            delete(UninventoriedMac).where(UninventoriedMac.account_id == event.account_id)
        )
        result = await reconcile_lists(uow, event.account_id, now)
        usernames = await reconcile_radius(uow, event.account_id)
        session.add(
            NetworkRelease(
                disconnection_id=event.disconnection_id,
                account_id=event.account_id,
                released_at=now,
                summary={
                    "released_ips": [ip.address for ip in released],
                    "removed_list_entries": result.entries_removed,
                    "removed_dhcp_reservations": dhcp_removed,
                    "removed_radius_usernames": usernames,
                },
            )
        )
        await uow.emit(
            events.AccountNetworkReleased(
                account_id=event.account_id,
                disconnection_id=event.disconnection_id,
                released_at=now,
                released_ips=released,
                removed_list_entries=result.entries_removed,
                removed_dhcp_reservations=dhcp_removed,
                removed_radius_usernames=usernames,
            ),
            subject=event.account_id,
        )
        log.info(
            "account_network_released",
            account_id=event.account_id,
            released_ips=len(released),
            removed_list_entries=result.entries_removed,
        )
