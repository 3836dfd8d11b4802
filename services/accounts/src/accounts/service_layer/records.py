"""The accounts' records as every handler finds them: an account or a status by id, the
references to them that events carry, and the action log each change writes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from accounts.adapters.tables import (
    Account,
    AccountLog,
    AccountStatus,
    Contact,
    ServiceableAddress,
)
from backhaul_contracts.common import Address, ContactRef, StatusRef
from backhaul_kit.clock import now
from backhaul_kit.errors import NotFound
from backhaul_kit.unit_of_work import UnitOfWork


def status_ref(status: AccountStatus) -> StatusRef:
    """The status as events name it."""
    return StatusRef(id=status.id, name=status.name, activates_account=status.activates_account)


def address_value(address: ServiceableAddress | None) -> Address | None:
    """The serviceable address as events carry it (None when there is none)."""
    if address is None:
        return None
    return Address(
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        region=address.region,
        postal_code=address.postal_code,
        country=address.country,
    )


def contact_ref(contact: Contact) -> ContactRef:
    """The contact as events carry it."""
    return ContactRef(
        contact_id=contact.id,
        name=contact.name,
        email=contact.email,
        is_primary=contact.is_primary,
        message_categories=list(contact.message_categories or []),
    )


async def get_account(uow: UnitOfWork, account_id: int, *, for_update: bool = False) -> Account:
    """The account with its status, type, address, contacts and groups, or NotFound."""
    statement = select(Account).where(Account.id == account_id)
    if for_update and not uow.db.is_sqlite:
        statement = statement.with_for_update(of=Account)
    account = (await uow.session.execute(statement)).unique().scalar_one_or_none()
    if account is None:
        raise NotFound(f"account {account_id} not found")
    return account


async def require_account(uow: UnitOfWork, account_id: int) -> None:
    """NotFound unless the account exists (one indexed read, none of its relations)."""
    if await uow.session.scalar(select(Account.id).where(Account.id == account_id)) is None:
        raise NotFound(f"account {account_id} not found")


async def get_status(uow: UnitOfWork, status_id: int) -> AccountStatus:
    return await uow.get(
        AccountStatus, status_id, not_found=f"account status {status_id} not found"
    )


async def status_by_name(uow: UnitOfWork, name: str) -> AccountStatus:
    status = (
        await uow.session.execute(select(AccountStatus).where(AccountStatus.name == name))
    ).scalar_one_or_none()
    if status is None:
        raise NotFound(f"account status {name!r} not found")
    return status


def log_action(uow: UnitOfWork, account_id: int, actor: str, action: str, **changes: Any) -> None:
    """Add an entry to the account's action history (written with the unit of work)."""
    uow.session.add(
        AccountLog(account_id=account_id, at=now(), actor=actor, action=action, changes=changes)
    )
