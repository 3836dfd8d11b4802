"""The local replica of accounts and contacts, kept from accounts' events.

Notifications never asks accounts who to write to: every account event carries what the
replica needs (name, parent, contacts with their email and message categories).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select, update

from backhaul_contracts.common import ContactRef
from backhaul_kit.unit_of_work import UnitOfWork
from notifications.adapters.tables import AccountReplica, ContactReplica
from notifications.domain.triggers import ContactView


async def upsert_account(
    uow: UnitOfWork, account_id: int, *, name: str | None, parent_account_id: int | None
) -> AccountReplica:
    account = await uow.session.get(AccountReplica, account_id)
    now = datetime.now(UTC)
    if account is None:
        account = AccountReplica(
            id=account_id,
            name=name or f"Account {account_id}",
            parent_account_id=parent_account_id,
            updated_at=now,
        )
        uow.session.add(account)
    else:
        if name is not None:
            account.name = name
        account.parent_account_id = parent_account_id
        account.updated_at = now
    await uow.session.flush()
    return account


async def upsert_contact(uow: UnitOfWork, account_id: int, contact: ContactRef) -> None:
    """Store a contact as the event describes it; a new primary demotes the old one."""
    if contact.is_primary:
        await uow.session.execute(
            update(ContactReplica)
            .where(
                ContactReplica.account_id == account_id,
                ContactReplica.contact_id != contact.contact_id,
            )
            .values(is_primary=False)
        )
    row = await uow.session.get(ContactReplica, contact.contact_id)
    if row is None:
        row = ContactReplica(contact_id=contact.contact_id, account_id=account_id)
        uow.session.add(row)
    row.account_id = account_id
    row.name = contact.name
    row.email = str(contact.email) if contact.email else None
    row.is_primary = contact.is_primary
    row.message_categories = list(contact.message_categories)
    await uow.session.flush()


async def remove_contact(uow: UnitOfWork, contact_id: int) -> None:
    await uow.session.execute(delete(ContactReplica).where(ContactReplica.contact_id == contact_id))


async def contacts_of(uow: UnitOfWork, account_id: int) -> list[ContactView]:
    rows = await uow.session.scalars(
        select(ContactReplica)
        .where(ContactReplica.account_id == account_id)
        .order_by(ContactReplica.contact_id)
    )
    return [
        ContactView(
            contact_id=r.contact_id,
            name=r.name,
            email=r.email,
            is_primary=r.is_primary,
            message_categories=list(r.message_categories or []),
        )
        for r in rows
    ]
