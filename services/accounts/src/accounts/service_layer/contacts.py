"""Contacts: several per account, exactly one primary (seed 003)."""

from __future__ import annotations

from typing import Any

from accounts.adapters.tables import Account, Contact
from accounts.service_layer.records import contact_ref, get_account, log_action
from backhaul_contracts.events.accounts import ContactChanged
from backhaul_kit.errors import Conflict, InvalidInput, NotFound
from backhaul_kit.unit_of_work import UnitOfWork

EDITABLE = ("name", "email", "phone", "message_categories")


async def _emit(
    uow: UnitOfWork, account: Account, contact: Contact, *, removed: bool = False
) -> None:
    await uow.emit(
        ContactChanged(
            account_id=account.id,
            account_name=account.name,
            parent_account_id=account.parent_id,
            contact=contact_ref(contact),
            removed=removed,
        ),
        subject=account.id,
    )


async def _contact(uow: UnitOfWork, account_id: int, contact_id: int) -> Contact:
    contact = await uow.session.get(Contact, contact_id)
    if contact is None or contact.account_id != account_id:
        raise NotFound(f"contact {contact_id} of account {account_id} not found")
    return contact


async def add_contact(
    uow: UnitOfWork, account_id: int, fields: dict[str, Any], *, primary: bool, actor: str
) -> Contact:
    """Add a contact. The account's first contact is its primary one; asking for a second
    primary is a conflict (use become-primary to move the flag)."""
    async with uow:
        account = await get_account(uow, account_id)
        has_primary = any(c.is_primary for c in account.contacts)
        if primary and has_primary:
            raise Conflict(
                f"account {account_id} already has a primary contact: "
                "add this one, then make it primary"
            )
        contact = Contact(
            account_id=account.id,
            is_primary=primary or not has_primary,
            **{k: fields.get(k) for k in EDITABLE if k in fields},
        )
        contact.message_categories = list(fields.get("message_categories") or [])
        uow.session.add(contact)
        await uow.session.flush()
        log_action(
            uow,
            account.id,
            actor,
            "contact_added",
            contact_id=contact.id,
            name=contact.name,
            primary=contact.is_primary,
        )
        await _emit(uow, account, contact)
        return contact


async def update_contact(
    uow: UnitOfWork, account_id: int, contact_id: int, fields: dict[str, Any], *, actor: str
) -> Contact:
    async with uow:
        account = await get_account(uow, account_id)
        contact = await _contact(uow, account_id, contact_id)
        changes = {}
        for key in EDITABLE:
            if key in fields and getattr(contact, key) != fields[key]:
                changes[key] = {"from": getattr(contact, key), "to": fields[key]}
                setattr(contact, key, fields[key])
        if changes:
            log_action(uow, account.id, actor, "contact_updated", contact_id=contact.id, **changes)
            await _emit(uow, account, contact)
        return contact


async def make_primary(uow: UnitOfWork, account_id: int, contact_id: int, *, actor: str) -> Contact:
    """Move the primary flag to this contact (the previous primary keeps being a contact)."""
    async with uow:
        account = await get_account(uow, account_id)
        contact = await _contact(uow, account_id, contact_id)
        if contact.is_primary:
            return contact
        for other in account.contacts:
            if other.is_primary:
                other.is_primary = False
                await uow.session.flush()  # one primary at any moment
                await _emit(uow, account, other)
        contact.is_primary = True
        log_action(uow, account.id, actor, "primary_contact_changed", contact_id=contact.id)
        await _emit(uow, account, contact)
        return contact


async def remove_contact(uow: UnitOfWork, account_id: int, contact_id: int, *, actor: str) -> None:
    async with uow:
        account = await get_account(uow, account_id)
        contact = await _contact(uow, account_id, contact_id)
        if contact.is_primary and len(account.contacts) > 1:
            raise Conflict("make another contact primary before removing the primary contact")
        if contact.is_primary and len(account.contacts) == 1:
            raise InvalidInput("an account's only contact cannot be removed; edit it instead")
        log_action(
            uow, account.id, actor, "contact_removed", contact_id=contact.id, name=contact.name
        )
        await _emit(uow, account, contact, removed=True)
        await uow.session.delete(contact)
