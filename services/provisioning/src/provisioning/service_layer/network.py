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

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from backhaul_contracts.events import provisioning as events
from backhaul_kit import clock
from backhaul_kit.errors import NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters.tables import (
    AccountReplica,
    AddressList,
    AddressListChange,
    AddressListEntry,
    FeedCounter,
    IpAssignment,
    IpPool,
    RadCheck,
    RadiusAccount,
    RadReply,
    RadUserGroup,
    table_of,
)
from provisioning.domain import ipam
from provisioning.domain.rules import (
    AccountFacts,
    AssigneeKind,
    assignment_replies,
    provisioning_of,
)
from provisioning.service_layer.account_state import (
    AccountState,
    ListRule,
    facts_of,
    forget_handed_over,
    forget_rules,
    handed_over,
    lock_accounts,
    read_state,
    rules_of,
)

__all__ = ["lock_accounts"]  # re-exported: the API handlers take their locks from here

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
    return await facts_of(uow, await read_state(uow, account_id), await rules_of(uow))


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
    # One executemany of plain rows: no ORM object per change of a storm.
    await uow.session.execute(
        insert(table_of(AddressListChange)),
        [
            {
                "seq": first + offset,
                "address_list_id": change.list_id,
                "action": change.action,
                "address": change.address,
                "account_id": change.account_id,
                "at": change.at,
            }
            for offset, change in enumerate(pending)
        ],
    )


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
        # So may a list or group it changed, and the state it wrote.
        forget_rules(uow)
        forget_handed_over(uow)
        raise


@asynccontextmanager
async def changing(uow: UnitOfWork) -> AsyncIterator[UnitOfWork]:
    """The unit of work of an API-called handler that may change address lists: entered
    here (the handler owns it), with the feed written as its last step."""
    async with uow, reconciling(uow):
        yield uow


# -- reconciliation: derived network state follows the sources of truth -----------------------


@dataclass
class ReconcileResult:
    """How many list entries a reconcile added and removed."""

    entries_added: int = 0
    entries_removed: int = 0


@dataclass(frozen=True)
class Listed:
    """A current assignment as the lists hold it."""

    id: UUID
    address: str


async def listed_assignments(uow: UnitOfWork, account_id: int) -> list[Listed]:
    """The account's current assignments that go on address lists, oldest first."""
    rows = await uow.session.execute(
        select(IpAssignment.id, IpAssignment.address, IpAssignment.assignee_kind)
        .where(IpAssignment.account_id == account_id, IpAssignment.removed_at.is_(None))
        .order_by(IpAssignment.assigned_at)
    )
    return [
        Listed(id, address)
        for id, address, kind in rows
        if provisioning_of(AssigneeKind(kind)).address_list
    ]


_ENTRIES = table_of(AddressListEntry).c


async def reconcile_lists(
    uow: UnitOfWork,
    account_id: int,
    now: datetime,
    *,
    only_list: AddressList | None = None,
    state: AccountState | None = None,
    assignments: Sequence[Listed] | None = None,
) -> ReconcileResult:
    """Make the account's address-list entries exactly what the lists' rules say.

    `state` (the account as a handler just wrote it) and `assignments` (its listed
    assignments, when the handler knows them) spare their look-ups. Entries are ended and
    added by set-shaped statements (no ORM object per entry): one UPDATE ... RETURNING for
    the entries no rule wants any more, one INSERT ... ON CONFLICT DO NOTHING RETURNING for
    the wanted ones (those already current are left alone by the partial unique index).
    """
    session = uow.session
    await session.flush()  # the Core statements below do not flush the handler's changes
    if state is None:
        state = await read_state(uow, account_id, lock=True)
    rules = await rules_of(uow)
    facts = await facts_of(uow, state, rules)
    lists = (ListRule.of(only_list),) if only_list is not None else rules.lists
    matching = [lst for lst in lists if lst.rule.matches(facts)]
    if not matching:
        assignments = ()  # nothing is wanted: no need to know what is assigned
    elif assignments is None:
        assignments = await listed_assignments(uow, account_id)
    wanted = [(lst, a) for lst in matching for a in assignments]
    ended = (
        update(table_of(AddressListEntry))
        .where(_ENTRIES.account_id == account_id, _ENTRIES.valid_to.is_(None))
        .values(valid_to=now)
        .returning(_ENTRIES.id, _ENTRIES.address_list_id, _ENTRIES.address)
    )
    if only_list is not None:
        ended = ended.where(_ENTRIES.address_list_id == only_list.id)
    if wanted:
        ended = ended.where(
            tuple_(_ENTRIES.address_list_id, _ENTRIES.assignment_id).not_in(
                [(lst.id, a.id) for lst, a in wanted]
            )
        )
    names = {lst.id: lst.name for lst in (*rules.lists, *lists)}
    result = ReconcileResult()
    # In entry order, as they were added: the feed and the events say it in that order.
    for _, list_id, address in sorted((await session.execute(ended)).all()):
        record_change(uow, list_id, "remove", address, account_id, now)
        name = names.get(list_id)
        if name is None:
            name = (await get_address_list(uow, list_id)).name
        await uow.emit(
            events.AddressListEntryRemoved(
                account_id=account_id, address_list_id=list_id, address_list=name, address=address
            ),
            subject=account_id,
        )
        result.entries_removed += 1
    if not wanted:
        return result
    inserted = await session.execute(_add_entries(uow, account_id, wanted, now))
    added = {(list_id, assignment_id) for list_id, assignment_id in inserted}
    for lst, assignment in wanted:
        if (lst.id, assignment.id) not in added:
            continue  # already on the list
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
    return result


def _add_entries(
    uow: UnitOfWork, account_id: int, wanted: Sequence[tuple[ListRule, Listed]], now: datetime
) -> Any:
    """Insert the wanted entries that are not current yet, returning those it inserted."""
    dialect_insert = sqlite.insert if uow.db.is_sqlite else postgresql.insert
    rows = [
        {
            "address_list_id": lst.id,
            "assignment_id": assignment.id,
            "account_id": account_id,
            "address": assignment.address,
            "valid_from": now,
        }
        for lst, assignment in wanted
    ]
    return (
        dialect_insert(table_of(AddressListEntry))
        .values(rows)
        .on_conflict_do_nothing(
            index_elements=["address_list_id", "assignment_id"],
            index_where=_ENTRIES.valid_to.is_(None),
        )
        .returning(_ENTRIES.address_list_id, _ENTRIES.assignment_id)
    )


async def sync_radius_user(
    uow: UnitOfWork, radius_account: RadiusAccount, facts: AccountFacts | None = None
) -> None:
    """Rewrite one RADIUS user's radcheck, radreply and radusergroup rows from the source.

    A deleted RADIUS account, or one of a disconnected account, has no rows at all, so
    FreeRADIUS rejects it. `facts` (the account's, when the caller has them) spares a read.
    """
    username = radius_account.username
    session = uow.session
    for table in (RadCheck, RadReply, RadUserGroup):
        await session.execute(delete(table).where(table.username == username))
    rules = await rules_of(uow)
    if facts is None:
        facts = await facts_of(uow, await read_state(uow, radius_account.account_id), rules)
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
    for group in rules.groups:
        if group.rule.matches(facts):
            session.add(
                RadUserGroup(username=username, groupname=group.name, priority=group.priority)
            )
    await session.flush()


async def reconcile_radius(
    uow: UnitOfWork, account_id: int, *, state: AccountState | None = None
) -> list[str]:
    """Rewrite the FreeRADIUS rows of the account's RADIUS logins; returns their usernames.

    With the account's `state` (a handler's), an account without logins costs no statement.
    """
    if state is not None and not state.radius_logins:
        return []
    radius_accounts = (
        await uow.session.scalars(
            select(RadiusAccount).where(
                RadiusAccount.account_id == account_id, RadiusAccount.deleted_at.is_(None)
            )
        )
    ).all()
    if not radius_accounts:
        return []
    facts = await facts_of(uow, state or await read_state(uow, account_id), await rules_of(uow))
    usernames = []
    for radius_account in radius_accounts:
        await sync_radius_user(uow, radius_account, facts)
        usernames.append(radius_account.username)
    return usernames


async def reconcile(uow: UnitOfWork, account_id: int, now: datetime) -> ReconcileResult:
    """Bring the account's list entries and FreeRADIUS rows in line with its sources.

    The account's state is the one its handler just wrote and handed over (`hand_over`),
    or read here."""
    state = handed_over(uow, account_id) or await read_state(uow, account_id, lock=True)
    result = await reconcile_lists(uow, account_id, now, state=state)
    await reconcile_radius(uow, account_id, state=state)
    return result
