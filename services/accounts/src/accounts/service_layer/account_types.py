"""Account types (Residential, Business, ...): names are unique."""

from __future__ import annotations

from sqlalchemy import select

from accounts.adapters.tables import AccountType
from backhaul_kit.errors import Conflict
from backhaul_kit.unit_of_work import UnitOfWork


async def create_account_type(uow: UnitOfWork, name: str) -> AccountType:
    """Add an account type; a taken name is a conflict."""
    async with uow:
        exists = await uow.session.scalar(select(AccountType.id).where(AccountType.name == name))
        if exists is not None:
            raise Conflict(f"an account type named {name!r} already exists")
        account_type = AccountType(name=name)
        uow.session.add(account_type)
        await uow.session.flush()
        return account_type
