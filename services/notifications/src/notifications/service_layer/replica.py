"""The local replica of accounts and contacts, kept from accounts' events.

Notifications never asks accounts who to write to: every account event carries what the
replica needs (name, parent, contacts with their email and message categories).

The writes are Core statements that hand back what the handler needs next (the account as
it now is, the account's contacts after the change), so that an event costs a statement or
two instead of a load, a flush and a query again: on a disconnect storm the statements are
the cost. Nothing here keeps ORM objects, so no identity map can go stale behind a write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from backhaul_contracts.common import ContactRef
from backhaul_kit.unit_of_work import UnitOfWork
from notifications.adapters.tables import AccountReplica, ContactReplica
from notifications.domain.triggers import ContactView

_ACCOUNTS = AccountReplica.__table__
_CONTACTS = ContactReplica.__table__


@dataclass(frozen=True)
class AccountView:
    """An account as the replica knows it."""

    id: int
    name: str
    parent_account_id: int | None


def dialect_insert(uow: UnitOfWork, table: Any) -> Any:
    """The backend's INSERT, which has ON CONFLICT (SQLite and PostgreSQL spell it alike)."""
    if uow.session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def upsert_account(
    uow: UnitOfWork, account_id: int, *, name: str | None, parent_account_id: int | None
) -> AccountView:
    """Store the account as the event describes it (a None name keeps the known one) and
    return it; one statement."""
    statement = dialect_insert(uow, _ACCOUNTS).values(
        id=account_id,
        name=name or f"Account {account_id}",
        parent_account_id=parent_account_id,
        updated_at=datetime.now(UTC),
    )
    changes = {
        "parent_account_id": statement.excluded.parent_account_id,
        "updated_at": statement.excluded.updated_at,
    }
    if name is not None:
        changes["name"] = statement.excluded.name
    row = (
        await uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=[_ACCOUNTS.c.id], set_=changes
            ).returning(_ACCOUNTS.c.name, _ACCOUNTS.c.parent_account_id)
        )
    ).one()
    return AccountView(account_id, row.name, row.parent_account_id)


async def get_account(uow: UnitOfWork, account_id: int) -> AccountView | None:
    row = (
        await uow.session.execute(
            select(_ACCOUNTS.c.name, _ACCOUNTS.c.parent_account_id).where(
                _ACCOUNTS.c.id == account_id
            )
        )
    ).one_or_none()
    return None if row is None else AccountView(account_id, row.name, row.parent_account_id)


async def upsert_contact(
    uow: UnitOfWork, account_id: int, contact: ContactRef
) -> list[ContactView]:
    """Store a contact as the event describes it; a new primary demotes the old one.

    Returns the account's contacts after the change. It reads them first (the handler
    needs them anyway) and writes only what differs: a disconnect repeats the contact the
    replica already has, and then costs this one query."""
    rows = (
        await uow.session.execute(
            select(_CONTACTS).where(
                or_(
                    _CONTACTS.c.account_id == account_id,
                    _CONTACTS.c.contact_id == contact.contact_id,
                )
            )
        )
    ).all()
    contacts = {r.contact_id: _view(r) for r in rows if r.account_id == account_id}
    wanted = ContactView(
        contact_id=contact.contact_id,
        name=contact.name,
        email=str(contact.email) if contact.email else None,
        is_primary=contact.is_primary,
        message_categories=list(contact.message_categories),
    )
    if contact.is_primary and any(
        c.is_primary for c in contacts.values() if c.contact_id != contact.contact_id
    ):
        await uow.session.execute(
            update(ContactReplica)
            .where(
                ContactReplica.account_id == account_id,
                ContactReplica.contact_id != contact.contact_id,
            )
            .values(is_primary=False)
        )
        for other in [c for c in contacts.values() if c.contact_id != contact.contact_id]:
            contacts[other.contact_id] = _with_primary(other, False)
    # Elsewhere (moved from another account) or different: written; the same: left alone.
    if contacts.get(contact.contact_id) != wanted:
        values = {
            "account_id": account_id,
            "name": wanted.name,
            "email": wanted.email,
            "is_primary": wanted.is_primary,
            "message_categories": wanted.message_categories,
        }
        statement = dialect_insert(uow, _CONTACTS).values(contact_id=contact.contact_id, **values)
        await uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=[_CONTACTS.c.contact_id],
                set_={k: statement.excluded[k] for k in values},
            )
        )
        contacts[contact.contact_id] = wanted
    return [contacts[k] for k in sorted(contacts)]


async def remove_contact(uow: UnitOfWork, contact_id: int) -> None:
    await uow.session.execute(delete(ContactReplica).where(ContactReplica.contact_id == contact_id))


async def contacts_of(uow: UnitOfWork, account_id: int) -> list[ContactView]:
    rows = await uow.session.execute(
        select(_CONTACTS)
        .where(_CONTACTS.c.account_id == account_id)
        .order_by(_CONTACTS.c.contact_id)
    )
    return [_view(r) for r in rows]


def _view(row: Any) -> ContactView:
    return ContactView(
        contact_id=row.contact_id,
        name=row.name,
        email=row.email,
        is_primary=bool(row.is_primary),
        message_categories=list(row.message_categories or []),
    )


def _with_primary(contact: ContactView, is_primary: bool) -> ContactView:
    return ContactView(
        contact_id=contact.contact_id,
        name=contact.name,
        email=contact.email,
        is_primary=is_primary,
        message_categories=list(contact.message_categories),
    )
