"""The network's derived state, kept in line with its sources of truth.

Everything the network holds for an account is derived from three sources: the account
replica (status, delinquency, data services), the IP assignments, and the rules of address
lists and RADIUS groups. `reconcile` brings the derived rows (list entries and their changes
feed, FreeRADIUS rows) in line with them, so a handler only updates a source and reconciles.

Two kinds of handler run that way, one convention each:

- An API-called handler owns its unit of work: it runs in `changing(uow)`, which enters it.
- An `on_*` event handler is called by the consumer with the consumer's open unit of work
  (one transaction for a whole polled batch, or for one event when a failed batch is
  replayed) and never enters it again: it runs in `reconciling(uow)`, so there is no
  savepoint per event. A failure needs none: the consumer rolls the transaction back.

Either way the changes feed is written once, as the transaction's last step
(`uow.before_commit(write_feed)`), after every change of every handler in it, and what a
failed block noted in `session.info` is forgotten with its rollback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import structlog
from sqlalchemy import delete, select, update

from backhaul_contracts.events import provisioning as events
from backhaul_kit import clock
from backhaul_kit.errors import NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters.tables import (
    AccountDataService,
    AccountReplica,
    AddressList,
    AddressListChange,
    AddressListEntry,
    FeedCounter,
    IpAssignment,
    IpPool,
    RadCheck,
    RadiusAccount,
    RadiusGroup,
    RadReply,
    RadUserGroup,
)
from provisioning.domain import ipam
from provisioning.domain.rules import (
    AccountFacts,
    AssigneeKind,
    MembershipRule,
    assignment_replies,
    provisioning_of,
)

log = structlog.get_logger(__name__)

FEED = "address_lists"


# -- lookups ----------------------------------------------------------------------------------


async def get_pool(uow: UnitOfWork, pool_id: int, *, for_update: bool = False) -> IpPool:
    """The pool, locked against concurrent assignment when asked (PostgreSQL)."""
    statement = select(IpPool).where(IpPool.id == pool_id)
    if for_update and not uow.db.is_sqlite:
        # Serialises assignments within one pool, so "next free" is never handed out twice.
        statement = statement.with_for_update(of=IpPool)
    pool = (await uow.session.execute(statement)).scalar_one_or_none()
    if pool is None:
        raise NotFound(f"IP pool {pool_id} not found")
    return pool


async def get_replica(uow: UnitOfWork, account_id: int) -> AccountReplica:
    """The account as provisioning knows it; 404 until its status is known."""
    replica = await uow.session.get(AccountReplica, account_id)
    if replica is None or replica.status_id is None:
        raise NotFound(
            f"account {account_id} is not known to provisioning yet "
            "(no AccountCreated or AccountStatusChanged received for it)"
        )
    return replica


async def get_assignment(uow: UnitOfWork, assignment_id: UUID) -> IpAssignment:
    """One assignment, current or ended."""
    return await uow.get(
        IpAssignment, assignment_id, not_found=f"IP assignment {assignment_id} not found"
    )


async def get_address_list(uow: UnitOfWork, list_id: int) -> AddressList:
    """One address list."""
    return await uow.get(AddressList, list_id, not_found=f"address list {list_id} not found")


async def replica_for_update(uow: UnitOfWork, account_id: int) -> AccountReplica:
    """The account's replica, locked (PostgreSQL); started empty if no event named it yet."""
    await lock_accounts(uow, account_id)
    replica = await uow.session.get(AccountReplica, account_id)
    if replica is None:
        replica = AccountReplica(account_id=account_id, delinquent=False, updated_at=clock.now())
        uow.session.add(replica)
    return replica


async def account_facts(uow: UnitOfWork, account_id: int) -> AccountFacts:
    """What the rules of lists and groups look at: status, delinquency, data services."""
    replica = await uow.session.get(AccountReplica, account_id)
    services = await uow.session.scalars(
        select(AccountDataService.service_id).where(AccountDataService.account_id == account_id)
    )
    if replica is None:
        return AccountFacts(status_id=None, activates=None)
    return AccountFacts(
        status_id=replica.status_id,
        activates=replica.activates,
        delinquent=replica.delinquent,
        data_service_ids=frozenset(services.all()),
        disconnected=replica.disconnected_at is not None,
    )


async def active_assignments(
    uow: UnitOfWork, *, account_id: int | None = None, pool_id: int | None = None
) -> list[IpAssignment]:
    """Current (not ended) assignments of an account or a pool, oldest first."""
    statement = select(IpAssignment).where(IpAssignment.removed_at.is_(None))
    if account_id is not None:
        statement = statement.where(IpAssignment.account_id == account_id)
    if pool_id is not None:
        statement = statement.where(IpAssignment.pool_id == pool_id)
    return list((await uow.session.scalars(statement.order_by(IpAssignment.assigned_at))).all())


# -- the changes feed -------------------------------------------------------------------------


@dataclass(frozen=True)
class _PendingChange:
    list_id: int
    action: str
    address: str
    account_id: int
    at: datetime


def record_change(
    uow: UnitOfWork, list_id: int, action: str, address: str, account_id: int, now: datetime
) -> None:
    """Note a change for the feed; `write_feed` numbers it when the handler finishes."""
    pending: list[_PendingChange] = uow.session.info.setdefault("feed", [])
    pending.append(_PendingChange(list_id, action, address, account_id, now))


async def write_feed(uow: UnitOfWork) -> None:
    """Number this transaction's changes under the counter row's lock, as its last step
    (`reconciling` registers it to run before the commit).

    The lock is held to commit, so positions become visible in the order they were taken:
    a router that read up to N never misses a later-committed change numbered below N.
    Taking it last (never before another lock) keeps it out of any deadlock.
    """
    pending: list[_PendingChange] = uow.session.info.pop("feed", [])
    if not pending:
        return
    last = await uow.session.scalar(
        update(FeedCounter)
        .where(FeedCounter.name == FEED)
        .values(value=FeedCounter.value + len(pending))
        .returning(FeedCounter.value)
    )
    if last is None:
        raise RuntimeError("the address-list feed counter is missing; run the migrations")
    first = int(last) - len(pending) + 1
    uow.session.add_all(
        AddressListChange(
            seq=first + offset,
            address_list_id=change.list_id,
            action=change.action,
            address=change.address,
            account_id=change.account_id,
            at=change.at,
        )
        for offset, change in enumerate(pending)
    )
    await uow.session.flush()


@asynccontextmanager
async def reconciling(uow: UnitOfWork) -> AsyncIterator[UnitOfWork]:
    """The block of a handler that may change address lists, in a unit of work that is
    already open and that it does not enter again (an event handler's, from the consumer).

    The feed is written when that unit of work commits, after all its handlers' changes:
    once per consumer batch, in the order the changes were made. If the block raises, what
    it noted is forgotten, since its changes are being rolled back.
    """
    info = uow.session.info
    noted_before = len(info.get("feed", ()))
    uow.before_commit(write_feed)
    try:
        yield uow
    except BaseException:
        # Only this block's feed changes: earlier blocks' wait for the commit and stay.
        del info.get("feed", [])[noted_before:]
        # Its row locks may be gone with a savepoint; re-taking one costs a query, no more.
        info.pop("locked_accounts", None)
        info.pop("locked_replicas", None)
        raise


@asynccontextmanager
async def changing(uow: UnitOfWork) -> AsyncIterator[UnitOfWork]:
    """The unit of work of an API-called handler that may change address lists: entered
    here (the handler owns it), with the feed written as its last step."""
    async with uow, reconciling(uow):
        yield uow


async def lock_accounts(uow: UnitOfWork, *account_ids: int) -> None:
    """Hold the accounts' replica rows (PostgreSQL) so their network state changes one at a time.

    Without it an assignment could read a status that an event is just changing and put the
    address on the old status's lists. Rows are taken in id order so two movers never
    deadlock. SQLite needs nothing: its write transactions are already serial.
    """
    if uow.db.is_sqlite:
        return
    held: set[int] = uow.session.info.setdefault("locked_accounts", set())
    wanted = sorted(set(account_ids) - held)
    if not wanted:
        return
    locked = await uow.session.scalars(
        select(AccountReplica)
        .where(AccountReplica.account_id.in_(wanted))
        .order_by(AccountReplica.account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    # Keep them referenced: the identity map is weak, and a later get should not re-query.
    uow.session.info.setdefault("locked_replicas", []).extend(locked.all())
    held.update(wanted)


# -- reconciliation: derived network state follows the sources of truth -----------------------


@dataclass
class ReconcileResult:
    """How many list entries a reconcile added and removed."""

    entries_added: int = 0
    entries_removed: int = 0


async def reconcile_lists(
    uow: UnitOfWork, account_id: int, now: datetime, *, only_list: AddressList | None = None
) -> ReconcileResult:
    """Make the account's address-list entries exactly what the lists' rules say."""
    await lock_accounts(uow, account_id)
    facts = await account_facts(uow, account_id)
    lists = (
        [only_list]
        if only_list is not None
        else list((await uow.session.scalars(select(AddressList).order_by(AddressList.id))).all())
    )
    assignments = [
        a
        for a in await active_assignments(uow, account_id=account_id)
        if provisioning_of(AssigneeKind(a.assignee_kind)).address_list
    ]
    wanted = {
        (lst.id, a.id): (lst, a)
        for lst in lists
        if MembershipRule.from_dict(lst.rule).matches(facts)
        for a in assignments
    }
    statement = select(AddressListEntry).where(
        AddressListEntry.account_id == account_id, AddressListEntry.valid_to.is_(None)
    )
    if only_list is not None:
        statement = statement.where(AddressListEntry.address_list_id == only_list.id)
    current = {
        (e.address_list_id, e.assignment_id): e for e in await uow.session.scalars(statement)
    }
    names = {lst.id: lst.name for lst in lists}
    result = ReconcileResult()
    for key, entry in sorted(current.items(), key=lambda item: item[1].id):
        if key in wanted:
            continue
        entry.valid_to = now
        record_change(uow, entry.address_list_id, "remove", entry.address, account_id, now)
        name = names.get(entry.address_list_id)
        if name is None:
            name = (await get_address_list(uow, entry.address_list_id)).name
        await uow.emit(
            events.AddressListEntryRemoved(
                account_id=account_id,
                address_list_id=entry.address_list_id,
                address_list=name,
                address=entry.address,
            ),
            subject=account_id,
        )
        result.entries_removed += 1
    for key, (lst, assignment) in wanted.items():
        if key in current:
            continue
        uow.session.add(
            AddressListEntry(
                address_list_id=lst.id,
                assignment_id=assignment.id,
                account_id=account_id,
                address=assignment.address,
                valid_from=now,
            )
        )
        record_change(uow, lst.id, "add", assignment.address, account_id, now)
        await uow.emit(
            events.AddressListEntryAdded(
                account_id=account_id,
                address_list_id=lst.id,
                address_list=lst.name,
                address=assignment.address,
            ),
            subject=account_id,
        )
        result.entries_added += 1
    await uow.session.flush()
    return result


async def sync_radius_user(uow: UnitOfWork, radius_account: RadiusAccount) -> None:
    """Rewrite one RADIUS user's radcheck, radreply and radusergroup rows from the source.

    A deleted RADIUS account, or one of a disconnected account, has no rows at all, so
    FreeRADIUS rejects it.
    """
    username = radius_account.username
    session = uow.session
    for table in (RadCheck, RadReply, RadUserGroup):
        await session.execute(delete(table).where(table.username == username))
    facts = await account_facts(uow, radius_account.account_id)
    if radius_account.deleted_at is not None or facts.disconnected:
        return
    session.add(
        RadCheck(
            username=username,
            attribute="Cleartext-Password",
            op=":=",
            value=radius_account.password,
        )
    )
    assigned = await session.scalars(
        select(IpAssignment.address).where(
            IpAssignment.radius_account_id == radius_account.id, IpAssignment.removed_at.is_(None)
        )
    )
    for reply in assignment_replies(ipam.parse_stored(a) for a in assigned):
        session.add(
            RadReply(username=username, attribute=reply.attribute, op=reply.op, value=reply.value)
        )
    groups = await session.scalars(
        select(RadiusGroup).order_by(RadiusGroup.priority, RadiusGroup.id)
    )
    for group in groups:
        if MembershipRule.from_dict(group.rule).matches(facts):
            session.add(
                RadUserGroup(username=username, groupname=group.name, priority=group.priority)
            )
    await session.flush()


async def reconcile_radius(uow: UnitOfWork, account_id: int) -> list[str]:
    """Rewrite the FreeRADIUS rows of the account's RADIUS logins; returns their usernames."""
    radius_accounts = await uow.session.scalars(
        select(RadiusAccount).where(
            RadiusAccount.account_id == account_id, RadiusAccount.deleted_at.is_(None)
        )
    )
    usernames = []
    for radius_account in radius_accounts:
        await sync_radius_user(uow, radius_account)
        usernames.append(radius_account.username)
    return usernames


async def reconcile(uow: UnitOfWork, account_id: int, now: datetime) -> ReconcileResult:
    """Bring the account's list entries and FreeRADIUS rows in line with its sources."""
    result = await reconcile_lists(uow, account_id, now)
    await reconcile_radius(uow, account_id)
    return result
