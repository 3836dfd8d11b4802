"""Accounts: creating one (with its serviceable address and primary contact), reading it,
and moving it between statuses, from the API or the scheduler's command."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from accounts.adapters.tables import (
    Account,
    AccountGroup,
    AccountType,
    Contact,
    ServiceableAddress,
)
from accounts.domain.rules import address_key
from accounts.service_layer.records import (
    address_value,
    contact_ref,
    get_account,
    get_status,
    log_action,
    require_account,
    status_by_name,
    status_ref,
)
from backhaul_contracts import Envelope
from backhaul_contracts.events import accounts as events
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit import clock
from backhaul_kit.commands import answer_command
from backhaul_kit.errors import Conflict, NotFound
from backhaul_kit.unit_of_work import UnitOfWork

# -- commands (what the API asks for) ------------------------------------------------------


@dataclass(frozen=True)
class NewAddress:
    line1: str
    city: str
    country: str
    line2: str | None = None
    region: str | None = None
    postal_code: str | None = None


@dataclass(frozen=True)
class NewContact:
    name: str
    email: str | None = None
    phone: str | None = None
    message_categories: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CreateAccount:
    name: str
    id: int | None = None
    status_id: int | None = None
    account_type_id: int | None = None
    parent_account_id: int | None = None
    billing_day: int = 1
    serviceable_address: NewAddress | None = None
    mailing_address: dict[str, Any] | None = None
    primary_contact: NewContact | None = None
    group_ids: list[int] = field(default_factory=list)
    custom_fields: dict[str, Any] = field(default_factory=dict)


# -- accounts ------------------------------------------------------------------------------


async def claim_address(uow: UnitOfWork, new: NewAddress, account_id: int) -> ServiceableAddress:
    """The serviceable address (found by its key, or added), held by `account_id` now; one
    another account holds is a conflict."""
    key = address_key(new.line1, new.city, new.postal_code, new.country)
    address = (
        await uow.session.execute(select(ServiceableAddress).where(ServiceableAddress.key == key))
    ).scalar_one_or_none()
    if address is None:
        address = ServiceableAddress(
            key=key,
            line1=new.line1,
            line2=new.line2,
            city=new.city,
            region=new.region,
            postal_code=new.postal_code,
            country=new.country.upper(),
        )
        uow.session.add(address)
    elif address.account_id is not None:
        raise Conflict(
            f"serviceable address {address.id} is already occupied by account {address.account_id}"
        )
    address.account_id = account_id
    return address


async def create_account(uow: UnitOfWork, command: CreateAccount, *, actor: str) -> Account:
    """Create an account with its serviceable address and primary contact; emit AccountCreated."""
    async with uow:
        session = uow.session
        # A taken id is found by the INSERT itself (the IntegrityError below), not by a read.
        status = (
            await get_status(uow, command.status_id)
            if command.status_id is not None
            else await status_by_name(uow, "Lead")
        )
        account_type = None
        groups: list[AccountGroup] = []
        if command.account_type_id is not None:
            account_type = await session.get(AccountType, command.account_type_id)
            if account_type is None:
                raise NotFound(f"account type {command.account_type_id} not found")
        if command.parent_account_id is not None:
            await require_account(uow, command.parent_account_id)
        now = clock.now()
        account = Account(
            name=command.name,
            status_id=status.id,
            account_type_id=account_type.id if account_type else None,
            parent_id=command.parent_account_id,
            billing_day=command.billing_day,
            mailing_address=command.mailing_address,
            custom_fields=command.custom_fields,
            created_at=now,
            activated_at=now if status.activates_account else None,
            disconnected_at=None,
        )
        if command.id is not None:
            account.id = command.id
        if command.group_ids:
            groups = list(
                (
                    await session.scalars(
                        select(AccountGroup).where(AccountGroup.id.in_(command.group_ids))
                    )
                ).all()
            )
            missing = sorted(set(command.group_ids) - {g.id for g in groups})
            if missing:
                raise NotFound(f"account group(s) {missing} not found")
            account.groups = groups
        session.add(account)
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict(f"account id {command.id} is already taken") from None
        address = None
        if command.serviceable_address is not None:
            address = await claim_address(uow, command.serviceable_address, account.id)
        contact = None
        if command.primary_contact is not None:
            contact = Contact(
                account_id=account.id,
                name=command.primary_contact.name,
                email=command.primary_contact.email,
                phone=command.primary_contact.phone,
                is_primary=True,
                message_categories=list(command.primary_contact.message_categories),
            )
            session.add(contact)
        await session.flush()
        log_action(uow, account.id, actor, "account_created", name=account.name, status=status.name)
        await uow.emit(
            events.AccountCreated(
                account_id=account.id,
                name=account.name,
                account_type=account_type.name if account_type else None,
                status=status_ref(status),
                serviceable_address=address_value(address),
                mailing_address=None,
                parent_account_id=account.parent_id,
                billing_day=account.billing_day,
                primary_contact=contact_ref(contact) if contact else None,
                created_at=now,
            ),
            subject=account.id,
        )
        if contact is not None:
            await uow.emit(
                events.ContactChanged(
                    account_id=account.id,
                    account_name=account.name,
                    parent_account_id=account.parent_id,
                    contact=contact_ref(contact),
                ),
                subject=account.id,
            )
        await session.flush()
        # The answer is the account as written: its relations are the rows this handler
        # already holds, set as loaded, so nothing is read back after the insert.
        set_committed_value(account, "status", status)
        set_committed_value(account, "account_type", account_type)
        set_committed_value(account, "serviceable_address", address)
        set_committed_value(account, "contacts", [contact] if contact else [])
        set_committed_value(account, "groups", sorted(groups, key=lambda g: g.name))
        return account


async def load_account(uow: UnitOfWork, account_id: int) -> Account:
    """The account with everything the API shows of it, or NotFound."""
    async with uow:
        return await get_account(uow, account_id)


async def change_status(
    uow: UnitOfWork, account_id: int, status_id: int, *, actor: str, reason: str | None = None
) -> tuple[Account, bool]:
    """Move an account to another status; returns (account, changed). Same status: no-op."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        new = await get_status(uow, status_id)
        previous = account.status
        if previous.id == new.id:
            return account, False
        now = clock.now()
        account.status_id = new.id
        account.status = new
        if new.activates_account:
            account.activated_at = account.activated_at or now
            account.disconnected_at = None  # back in service: it can be disconnected again
        log_action(
            uow,
            account.id,
            actor,
            "status_changed",
            previous=previous.name,
            status=new.name,
            reason=reason,
        )
        await uow.emit(
            events.AccountStatusChanged(
                account_id=account.id,
                previous_status=status_ref(previous),
                status=status_ref(new),
                reason=reason,
                changed_by=actor,
                parent_account_id=account.parent_id,
                changed_at=now,
            ),
            subject=account.id,
        )
        return account, True


async def on_change_status_command(
    command: events.ChangeAccountStatus, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The scheduler's ChangeAccountStatus: done like the HTTP call, answered either way."""

    async def carry_out() -> dict[str, Any]:
        account, changed = await change_status(
            uow,
            command.account_id,
            command.status_id,
            actor=command.requested_by,
            reason=command.reason,
        )
        return {"status_id": account.status_id, "changed": changed}

    await answer_command(uow, command, envelope, topic=ACCOUNTS_EVENTS, carry_out=carry_out)
