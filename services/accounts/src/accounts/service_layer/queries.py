"""Read-side queries of the accounts API."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select

from accounts.adapters.tables import (
    Account,
    AccountGroup,
    AccountLog,
    AccountStatus,
    AccountType,
    Disconnection,
)
from accounts.service_layer.records import require_account
from backhaul_kit.unit_of_work import UnitOfWork


async def list_statuses(uow: UnitOfWork) -> list[AccountStatus]:
    async with uow:
        return list(
            (await uow.session.scalars(select(AccountStatus).order_by(AccountStatus.id))).all()
        )


async def list_account_types(uow: UnitOfWork) -> list[AccountType]:
    async with uow:
        return list((await uow.session.scalars(select(AccountType).order_by(AccountType.id))).all())


async def list_accounts(
    uow: UnitOfWork,
    *,
    status_id: int | None = None,
    account_type_id: int | None = None,
    group_id: int | None = None,
    activates: bool | None = None,
    q: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Account], int]:
    async with uow:
        filters = []
        if status_id is not None:
            filters.append(Account.status_id == status_id)
        if account_type_id is not None:
            filters.append(Account.account_type_id == account_type_id)
        if group_id is not None:
            filters.append(Account.groups.any(AccountGroup.id == group_id))
        if activates is not None:
            filters.append(
                Account.status_id.in_(
                    select(AccountStatus.id).where(AccountStatus.activates_account == activates)
                )
            )
        if q:
            pattern = f"%{q.lower()}%"
            filters.append(or_(func.lower(Account.name).like(pattern)))
        total = await uow.session.scalar(select(func.count()).select_from(Account).where(*filters))
        rows = await uow.session.scalars(
            select(Account).where(*filters).order_by(Account.id).limit(limit).offset(offset)
        )
        return list(rows.unique().all()), int(total or 0)


async def list_disconnections(uow: UnitOfWork, account_id: int) -> list[Disconnection]:
    async with uow:
        await require_account(uow, account_id)
        rows = await uow.session.scalars(
            select(Disconnection)
            .where(Disconnection.account_id == account_id)
            .order_by(Disconnection.disconnected_at.desc())
        )
        return list(rows.all())


async def list_logs(
    uow: UnitOfWork,
    account_id: int,
    *,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[AccountLog]:
    async with uow:
        await require_account(uow, account_id)
        statement = select(AccountLog).where(AccountLog.account_id == account_id)
        if action:
            statement = statement.where(AccountLog.action == action)
        if actor:
            statement = statement.where(AccountLog.actor == actor)
        if since:
            statement = statement.where(AccountLog.at >= since)
        if until:
            statement = statement.where(AccountLog.at < until)
        rows = await uow.session.scalars(statement.order_by(AccountLog.id.desc()).limit(limit))
        return list(rows.all())
