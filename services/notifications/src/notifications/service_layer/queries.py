"""Read-side queries of the notifications API."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import select

from backhaul_kit.errors import NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from notifications.adapters.tables import AccountReplica, ContactReplica, Email, Trigger
from notifications.domain.delivery import EmailState


async def list_triggers(uow: UnitOfWork, *, event_type: str | None = None) -> list[Trigger]:
    async with uow:
        statement = select(Trigger).order_by(Trigger.id)
        if event_type:
            statement = statement.where(Trigger.event_type == event_type)
        return list((await uow.session.scalars(statement)).all())


async def get_trigger(uow: UnitOfWork, trigger_id: int) -> Trigger:
    async with uow:
        return await uow.get(Trigger, trigger_id, not_found=f"trigger {trigger_id} not found")


async def list_emails(
    uow: UnitOfWork,
    account_id: int,
    *,
    state: EmailState | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Email]:
    """An account's email log, newest first.

    An account the replica has not heard of yet simply has no email: the replica follows
    accounts' events, so a 404 here would only report replication lag.
    """
    async with uow:
        statement = select(Email).where(Email.account_id == account_id)
        if state is not None:
            statement = statement.where(Email.state == state.value)
        rows = await uow.session.scalars(
            statement.order_by(Email.queued_at.desc(), Email.id).limit(limit).offset(offset)
        )
        return list(rows.all())


async def list_all_emails(
    uow: UnitOfWork, *, state: EmailState | None = None, limit: int = 100, offset: int = 0
) -> list[Email]:
    """Every account's email, newest first: the operators' view of the queue."""
    async with uow:
        statement = select(Email)
        if state is not None:
            statement = statement.where(Email.state == state.value)
        rows = await uow.session.scalars(
            statement.order_by(Email.queued_at.desc(), Email.id).limit(limit).offset(offset)
        )
        return list(rows.all())


async def get_email(uow: UnitOfWork, email_id: UUID) -> Email:
    async with uow:
        return await uow.get(Email, email_id, not_found=f"email {email_id} not found")


async def account_contacts(uow: UnitOfWork, account_id: int) -> list[ContactReplica]:
    """The contacts the replica holds for an account (404 until accounts' events arrive)."""
    async with uow:
        if await uow.session.get(AccountReplica, account_id) is None:
            raise NotFound(f"account {account_id} is not known to notifications (yet)")
        rows = await uow.session.scalars(
            select(ContactReplica)
            .where(ContactReplica.account_id == account_id)
            .order_by(ContactReplica.contact_id)
        )
        return list(rows.all())
