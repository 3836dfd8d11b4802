"""IP assignments: assign, remove, move (seed 003). Each handler owns its unit of work.

A handler changes the assignments and then lets `network.reconcile` bring list entries and
FreeRADIUS rows in line (see network.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from backhaul_contracts.events import provisioning as events
from backhaul_kit import clock
from backhaul_kit.errors import Conflict, InvalidInput, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters import taken_blocks
from provisioning.adapters.tables import (
    DhcpReservation,
    IpAssignment,
    RadiusAccount,
    UninventoriedMac,
    table_of,
)
from provisioning.domain import ipam
from provisioning.domain.rules import AssigneeKind, normalise_mac, provisioning_of
from provisioning.service_layer.network import (
    changing,
    get_assignment,
    get_pool,
    get_replica,
    lock_accounts,
    reconcile,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Assignee:
    """Who gets the IP. `mac` for the MAC kinds, `radius_account_id` for a RADIUS account."""

    kind: AssigneeKind = AssigneeKind.ACCOUNT
    mac: str | None = None
    inventory_item_id: int | None = None
    radius_account_id: int | None = None


@dataclass(frozen=True)
class AssignIp:
    """Assign `address`, or the next free address (or subnet of `prefix_length`), of a pool."""

    account_id: int
    pool_id: int
    address: str | None = None
    prefix_length: int | None = None
    assignee: Assignee = Assignee()
    soft: bool = False
    description: str | None = None


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
                await end_assignment(uow, other, now, reason="replaced")
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


async def end_assignment(
    uow: UnitOfWork, assignment: IpAssignment, now: datetime, *, reason: str
) -> int:
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


async def end_account_assignments(
    uow: UnitOfWork, account_id: int, now: datetime, *, reason: str
) -> tuple[list[events.IpReleased], int]:
    """End every current assignment of the account (kept as history), as `end_assignment`
    does one by one, in set-shaped statements; emits IpReleased for each, oldest first.

    Returns the releases and how many DHCP reservations went. Temporary MACs are left to
    the caller (a disconnect removes all of the account's at once). Core statements: the
    caller holds no ORM object of these assignments.
    """
    table = table_of(IpAssignment)
    ended = await uow.session.execute(
        update(table)
        .where(table.c.account_id == account_id, table.c.removed_at.is_(None))
        # pending_free: what taken_blocks.freed marks.
        .values(removed_at=now, removed_reason=reason, pending_free=True)
        .returning(
            table.c.id,
            table.c.address,
            table.c.pool_id,
            table.c.assignee_kind,
            table.c.assigned_at,
        )
    )
    rows = sorted(ended.all(), key=lambda row: row.assigned_at)
    dhcp = [
        row.id for row in rows if provisioning_of(AssigneeKind(row.assignee_kind)).dhcp_reservation
    ]
    dhcp_removed = 0
    if dhcp:  # reservations exist only for the kinds that make them
        removed = await uow.session.execute(
            delete(DhcpReservation).where(DhcpReservation.assignment_id.in_(dhcp))
        )
        dhcp_removed = int(getattr(removed, "rowcount", 0) or 0)
    released = [
        events.IpReleased(
            account_id=account_id,
            assignment_id=row.id,
            address=row.address,
            released_at=now,
            pool_id=row.pool_id,
            assignee_kind=row.assignee_kind,
            reason=reason,
        )
        for row in rows
    ]
    for event in released:
        await uow.emit(event, subject=account_id)
    return released, dhcp_removed


async def assign_ip(uow: UnitOfWork, command: AssignIp, *, actor: str) -> IpAssignment:
    """Assign an address (or the next free one) to an assignee and provision it (seed 003)."""
    async with changing(uow):
        now = clock.now()
        assignment = await _assign(uow, command, actor=actor, now=now)
        await reconcile(uow, command.account_id, now)
        return assignment


async def remove_assignment(uow: UnitOfWork, assignment_id: UUID, *, actor: str) -> IpAssignment:
    """End an assignment: its address is free again and its provisioning is undone."""
    async with changing(uow):
        assignment = await get_assignment(uow, assignment_id)
        if assignment.removed_at is not None:
            raise Conflict(f"IP assignment {assignment_id} was already removed")
        now = clock.now()
        await end_assignment(uow, assignment, now, reason="removed")
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
        now = clock.now()
        await end_assignment(uow, old, now, reason="moved")
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
