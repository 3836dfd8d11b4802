"""What reconciliation reads about an account and about the rules, at one statement or none.

A storm handler (a status change, a disconnect) pays per statement, not per computation, so
this module reads what the rules of lists and groups look at with the fewest round trips:

- `update_replica` changes the replica and returns its state in the same statement
  (`UPDATE ... RETURNING`), which on PostgreSQL also takes the row lock `lock_accounts`
  would have taken;
- `read_state` reads the same state in one `SELECT` where nothing changes it;
- the state counts what the account holds beside the replica (data services, RADIUS
  logins, uninventoried MACs) in the same statement, so a handler skips the look-ups of
  what is not there;
- the rules of address lists and RADIUS groups are read once per transaction
  (`rules_of`), not once per event of a consumer batch; a handler that changes a list or a
  group calls `forget_rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters.tables import (
    AccountDataService,
    AccountReplica,
    AddressList,
    RadiusAccount,
    RadiusGroup,
    UninventoriedMac,
)
from provisioning.domain.rules import AccountFacts, MembershipRule

_RULES = "rules"
_LOCKED = "locked_accounts"
_HANDED_OVER = "handed_over_state"


async def lock_accounts(uow: UnitOfWork, *account_ids: int) -> None:
    """Hold the accounts' replica rows (PostgreSQL) so their network state changes one at a time.

    Without it an assignment could read a status that an event is just changing and put the
    address on the old status's lists. Rows are taken in id order so two movers never
    deadlock. SQLite needs nothing: its write transactions are already serial.
    """
    if uow.db.is_sqlite:
        return
    held: set[int] = uow.session.info.setdefault(_LOCKED, set())
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


# -- the account ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountState:
    """The replica's facts and how many of each related row the account has."""

    account_id: int
    known: bool  # a replica row exists
    status_id: int | None = None
    activates: bool | None = None
    delinquent: bool = False
    disconnected: bool = False
    data_services: int = 0
    radius_logins: int = 0
    uninventoried_macs: int = 0


def _count(column: Any, *where: ColumnElement[bool]) -> Any:
    # Correlated to the replica row: one index seek each, inside the one statement.
    return (
        select(func.count())
        .where(column == AccountReplica.account_id, *where)
        .correlate(AccountReplica)
        .scalar_subquery()
    )


_STATE = (
    AccountReplica.status_id,
    AccountReplica.activates,
    AccountReplica.delinquent,
    AccountReplica.disconnected_at,
    _count(AccountDataService.account_id),
    _count(RadiusAccount.account_id, RadiusAccount.deleted_at.is_(None)),
    _count(UninventoriedMac.account_id),
)


def _state(account_id: int, row: Row[Any] | None) -> AccountState:
    if row is None:
        return AccountState(account_id=account_id, known=False)
    status_id, activates, delinquent, disconnected_at, services, logins, macs = tuple(row)
    return AccountState(
        account_id=account_id,
        known=True,
        status_id=status_id,
        activates=activates,
        delinquent=bool(delinquent),
        disconnected=disconnected_at is not None,
        data_services=int(services),
        radius_logins=int(logins),
        uninventoried_macs=int(macs),
    )


async def read_state(uow: UnitOfWork, account_id: int, *, lock: bool = False) -> AccountState:
    """The account's state in one statement; with `lock`, its row held first (PostgreSQL)."""
    if lock:
        await lock_accounts(uow, account_id)
    row = (
        await uow.session.execute(select(*_STATE).where(AccountReplica.account_id == account_id))
    ).one_or_none()
    return _state(account_id, row)


async def update_replica(
    uow: UnitOfWork,
    account_id: int,
    values: dict[str, Any],
    now: datetime,
    *,
    unless: ColumnElement[bool] | None = None,
) -> AccountState | None:
    """Set replica columns (and `updated_at`), starting the replica if no event named the
    account yet; returns its state after the change.

    With `unless` (a condition on other rows, such as "this disconnection was released"),
    nothing changes while it holds, and None is returned: the check rides in the UPDATE
    instead of costing a statement of its own.

    On PostgreSQL the UPDATE holds the row to commit, as `lock_accounts` would, so the
    account is noted as locked and no later handler of the transaction locks it again.
    """
    session = uow.session
    statement = (
        update(AccountReplica)
        .where(AccountReplica.account_id == account_id)
        .values(**values, updated_at=now)
        .returning(*_STATE)
        # An ORM object of the row (a handler's get) must see the change as the row does.
        .execution_options(synchronize_session="fetch")
    )
    if unless is not None:
        statement = statement.where(~unless)
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        # Rare: a first event of the account, or `unless` held.
        if unless is not None and await session.scalar(select(unless)):
            return None
        await session.execute(
            insert(AccountReplica).values(
                **{"delinquent": False, **values}, account_id=account_id, updated_at=now
            )
        )
        # Read it back rather than guess what other rows exist.
        row = (await session.execute(statement)).one()
    if not uow.db.is_sqlite:
        session.info.setdefault(_LOCKED, set()).add(account_id)
    return _state(account_id, row)


async def replica_changed(
    uow: UnitOfWork, account_id: int, values: dict[str, Any], now: datetime
) -> AccountState:
    """`update_replica` with no condition: the state after the change."""
    state = await update_replica(uow, account_id, values, now)
    assert state is not None  # no `unless`, so always changed
    return state


def hand_over(uow: UnitOfWork, state: AccountState) -> None:
    """Leave the state a handler just wrote for the `reconcile` it calls next, which takes
    it (`handed_over`) instead of reading it again. Only for a reconcile that follows at
    once: the state is not kept beyond that."""
    uow.session.info[_HANDED_OVER] = state


def handed_over(uow: UnitOfWork, account_id: int) -> AccountState | None:
    """The state handed over for this account, taken (it serves one reconcile), if any."""
    state: AccountState | None = uow.session.info.pop(_HANDED_OVER, None)
    return state if state is not None and state.account_id == account_id else None


def forget_handed_over(uow: UnitOfWork) -> None:
    uow.session.info.pop(_HANDED_OVER, None)


# -- the rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListRule:
    id: int
    name: str
    rule: MembershipRule

    @classmethod
    def of(cls, address_list: AddressList) -> ListRule:
        return cls(address_list.id, address_list.name, MembershipRule.from_dict(address_list.rule))


@dataclass(frozen=True)
class GroupRule:
    name: str
    priority: int
    rule: MembershipRule


@dataclass(frozen=True)
class Rules:
    """Every address list (by id) and RADIUS group (in the order FreeRADIUS reads them)."""

    lists: tuple[ListRule, ...]
    groups: tuple[GroupRule, ...]

    @property
    def use_services(self) -> bool:
        """Whether any rule looks at data services (if none, they need not be read)."""
        rules = [r.rule for r in self.lists] + [g.rule for g in self.groups]
        return any(r.data_service is not None or r.service_ids for r in rules)


async def rules_of(uow: UnitOfWork) -> Rules:
    """The rules of lists and groups, read once per transaction."""
    cached: Rules | None = uow.session.info.get(_RULES)
    if cached is not None:
        return cached
    session = uow.session
    lists = await session.execute(
        select(AddressList.id, AddressList.name, AddressList.rule).order_by(AddressList.id)
    )
    groups = await session.execute(
        select(RadiusGroup.name, RadiusGroup.priority, RadiusGroup.rule).order_by(
            RadiusGroup.priority, RadiusGroup.id
        )
    )
    rules = Rules(
        lists=tuple(ListRule(i, n, MembershipRule.from_dict(r)) for i, n, r in lists),
        groups=tuple(GroupRule(n, p, MembershipRule.from_dict(r)) for n, p, r in groups),
    )
    session.info[_RULES] = rules
    return rules


def forget_rules(uow: UnitOfWork) -> None:
    """A list or group changed in this transaction: read the rules again when next needed."""
    uow.session.info.pop(_RULES, None)


async def facts_of(uow: UnitOfWork, state: AccountState, rules: Rules) -> AccountFacts:
    """What the rules look at; data services are read only if the account has some and a
    rule looks at them."""
    if not state.known:
        return AccountFacts(status_id=None, activates=None)
    services: frozenset[int] = frozenset()
    if state.data_services and rules.use_services:
        services = frozenset(
            await uow.session.scalars(
                select(AccountDataService.service_id).where(
                    AccountDataService.account_id == state.account_id
                )
            )
        )
    return AccountFacts(
        status_id=state.status_id,
        activates=state.activates,
        delinquent=state.delinquent,
        data_service_ids=services,
        disconnected=state.disconnected,
    )
