"""Accounts' handlers: one per command or event. Each owns its unit of work."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from accounts.adapters.tables import (
    Account,
    AccountGroup,
    AccountLog,
    AccountStatus,
    AccountType,
    Contact,
    Disconnection,
    DisconnectionStep,
    ServiceableAddress,
    Setting,
)
from accounts.domain.rules import StepName, StepState, address_key, normalise_colour
from backhaul_contracts import Envelope
from backhaul_contracts.common import Address, ContactRef, Proration, StatusRef
from backhaul_contracts.events import accounts as events
from backhaul_contracts.events.billing import InvoiceIssued
from backhaul_contracts.events.notifications import EmailRejected, EmailSent
from backhaul_contracts.events.provisioning import AccountNetworkReleased
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.commands import answer_command
from backhaul_kit.errors import Conflict, InvalidInput, NotFound
from backhaul_kit.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

DISCONNECT_STATUS_SETTING = "disconnect_status_id"


# -- commands (what the API and the scheduler ask for) -----------------------------------


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


# -- helpers -------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def status_ref(status: AccountStatus) -> StatusRef:
    return StatusRef(id=status.id, name=status.name, activates_account=status.activates_account)


async def announce_status(uow: UnitOfWork, status: AccountStatus) -> None:
    """Stage AccountStatusDefined: the status as it now is (written, so it has its id)."""
    await uow.session.flush()
    event = events.AccountStatusDefined(
        status_id=status.id,
        name=status.name,
        activates_account=status.activates_account,
        icon=status.icon,
        colour=status.colour,
        is_default=status.is_default,
        defined_at=_now(),
    )
    await uow.emit(event, subject=event.subject)


def address_value(address: ServiceableAddress | None) -> Address | None:
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
    return ContactRef(
        contact_id=contact.id,
        name=contact.name,
        email=contact.email,
        is_primary=contact.is_primary,
        message_categories=list(contact.message_categories or []),
    )


def primary_contact(account: Account) -> Contact | None:
    return next((c for c in account.contacts if c.is_primary), None)


async def get_account(uow: UnitOfWork, account_id: int, *, for_update: bool = False) -> Account:
    statement = select(Account).where(Account.id == account_id)
    if for_update and not uow.db.is_sqlite:
        statement = statement.with_for_update(of=Account)
    account = (await uow.session.execute(statement)).unique().scalar_one_or_none()
    if account is None:
        raise NotFound(f"account {account_id} not found")
    return account


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


def _log(uow: UnitOfWork, account_id: int, actor: str, action: str, **changes: Any) -> None:
    uow.session.add(
        AccountLog(account_id=account_id, at=_now(), actor=actor, action=action, changes=changes)
    )


async def disconnect_status(uow: UnitOfWork) -> AccountStatus:
    setting = await uow.session.get(Setting, DISCONNECT_STATUS_SETTING)
    if setting is not None:
        return await get_status(uow, int(setting.value))
    return await status_by_name(uow, "Inactive")


# -- account statuses ----------------------------------------------------------------------


async def create_status(
    uow: UnitOfWork, *, name: str, activates_account: bool, icon: str, colour: str
) -> AccountStatus:
    """Add a custom account status; names are unique. Publishes AccountStatusDefined."""
    async with uow:
        colour = normalise_colour(colour)
        taken = await uow.session.scalar(
            select(func.count()).select_from(AccountStatus).where(AccountStatus.name == name)
        )
        if taken:
            raise Conflict(f"an account status named {name!r} already exists")
        status = AccountStatus(
            name=name,
            activates_account=activates_account,
            icon=icon,
            colour=colour,
            is_default=False,
        )
        uow.session.add(status)
        await announce_status(uow, status)
        return status


# -- accounts ------------------------------------------------------------------------------


async def _claim_address(uow: UnitOfWork, new: NewAddress, account_id: int) -> ServiceableAddress:
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
        if command.id is not None and await session.get(Account, command.id) is not None:
            raise Conflict(f"account id {command.id} is already taken")
        status = (
            await get_status(uow, command.status_id)
            if command.status_id is not None
            else await status_by_name(uow, "Lead")
        )
        account_type = None
        if command.account_type_id is not None:
            account_type = await session.get(AccountType, command.account_type_id)
            if account_type is None:
                raise NotFound(f"account type {command.account_type_id} not found")
        if command.parent_account_id is not None:
            await get_account(uow, command.parent_account_id)
        now = _now()
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
            address = await _claim_address(uow, command.serviceable_address, account.id)
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
        _log(uow, account.id, actor, "account_created", name=account.name, status=status.name)
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
        session.expunge(account)
    return await load_account(uow, account.id)


async def load_account(uow: UnitOfWork, account_id: int) -> Account:
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
        now = _now()
        account.status_id = new.id
        account.status = new
        if new.activates_account:
            account.activated_at = account.activated_at or now
            account.disconnected_at = None  # back in service: it can be disconnected again
        _log(
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


async def disconnect(
    uow: UnitOfWork, account_id: int, *, actor: str, proration: Proration = Proration.INHERIT
) -> Disconnection:
    """Disconnect (never delete) an account, in one transaction (seed 004).

    Moves it to the configured disconnect status, frees its serviceable address, writes the
    disconnection log with a pending step per fan-out effect, and emits AccountDisconnected.
    Its children are left as they are.
    """
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        if account.disconnected_at is not None:
            raise Conflict(f"account {account_id} is already disconnected")
        target = await disconnect_status(uow)
        previous = account.status
        now = _now()
        address = account.serviceable_address
        released = address_value(address)
        if address is not None:
            address.account_id = None
        account.status_id = target.id
        account.status = target
        account.disconnected_at = now
        contact = primary_contact(account)
        disconnection_id = uuid4()
        envelope = await uow.emit(
            events.AccountDisconnected(
                account_id=account.id,
                account_name=account.name,
                disconnection_id=disconnection_id,
                disconnected_at=now,
                disconnected_by=actor,
                previous_status=status_ref(previous),
                status=status_ref(target),
                released_address=released,
                proration=proration,
                parent_account_id=account.parent_id,
                primary_contact=contact_ref(contact) if contact else None,
            ),
            subject=account.id,
        )
        disconnection = Disconnection(
            id=disconnection_id,
            account_id=account.id,
            disconnected_at=now,
            disconnected_by=actor,
            address=released.model_dump() if released else None,
            previous_status_id=previous.id,
            status_id=target.id,
            proration=proration.value,
            event_id=envelope.event_id,
        )
        uow.session.add(disconnection)
        email_state = StepState.PENDING if contact and contact.email else StepState.SKIPPED
        for step, state in (
            (StepName.FINAL_INVOICE, StepState.PENDING),
            (StepName.NETWORK_RELEASE, StepState.PENDING),
            (StepName.EMAIL, email_state),
        ):
            uow.session.add(
                DisconnectionStep(
                    disconnection_id=disconnection_id,
                    step=step.value,
                    state=state.value,
                    updated_at=now,
                    result={}
                    if state is StepState.PENDING
                    else {"reason": "no primary contact email"},
                )
            )
        _log(
            uow,
            account.id,
            actor,
            "account_disconnected",
            previous=previous.name,
            status=target.name,
            address=released.model_dump() if released else None,
            disconnection_id=str(disconnection_id),
            proration=proration.value,
        )
        await uow.session.flush()
        uow.session.expunge(disconnection)
    return await load_disconnection(uow, disconnection_id)


async def load_disconnection(uow: UnitOfWork, disconnection_id: UUID) -> Disconnection:
    async with uow:
        disconnection = (
            await uow.session.execute(
                select(Disconnection).where(Disconnection.id == disconnection_id)
            )
        ).scalar_one()
        return disconnection


async def record_step(
    uow: UnitOfWork,
    disconnection_id: UUID,
    step: StepName,
    state: StepState,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """Record a fan-out step's outcome on the disconnection it belongs to."""
    async with uow:
        row = await uow.session.get(DisconnectionStep, (disconnection_id, step.value))
        if row is None:
            log.warning(
                "disconnection_step_unknown",
                disconnection_id=str(disconnection_id),
                step=step.value,
            )
            return
        if row.state == StepState.DONE.value:
            return  # a later failure report cannot undo what is done
        row.state = state.value
        row.updated_at = _now()
        row.result = result or {}
        row.error = error


# -- events from the other services ----------------------------------------------------------


async def on_invoice_issued(event: InvoiceIssued, envelope: Envelope, uow: UnitOfWork) -> None:
    if event.final and event.disconnection_id is not None:
        await record_step(
            uow,
            event.disconnection_id,
            StepName.FINAL_INVOICE,
            StepState.DONE,
            result={
                "invoice_id": event.invoice_id,
                "number": event.number,
                "total": str(event.total),
                "currency": event.currency,
            },
        )


async def on_network_released(
    event: AccountNetworkReleased, envelope: Envelope, uow: UnitOfWork
) -> None:
    await record_step(
        uow,
        event.disconnection_id,
        StepName.NETWORK_RELEASE,
        StepState.DONE,
        result={
            "released_ips": [ip.address for ip in event.released_ips],
            "removed_list_entries": event.removed_list_entries,
        },
    )


async def on_email_sent(event: EmailSent, envelope: Envelope, uow: UnitOfWork) -> None:
    if event.disconnection_id is not None:
        await record_step(
            uow,
            event.disconnection_id,
            StepName.EMAIL,
            StepState.DONE,
            result={"email_id": str(event.email_id), "recipient": event.recipient},
        )


async def on_email_rejected(event: EmailRejected, envelope: Envelope, uow: UnitOfWork) -> None:
    if event.disconnection_id is not None:
        await record_step(
            uow,
            event.disconnection_id,
            StepName.EMAIL,
            StepState.FAILED,
            result={"email_id": str(event.email_id), "recipient": event.recipient},
            error=event.reason,
        )


# -- commands from the scheduler ---------------------------------------------------------------


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


async def on_disconnect_command(
    command: events.DisconnectAccount, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The scheduler's DisconnectAccount: done like the HTTP call, answered either way."""

    async def carry_out() -> dict[str, Any]:
        disconnection = await disconnect(
            uow, command.account_id, actor=command.requested_by, proration=command.proration
        )
        return {"disconnection_id": str(disconnection.id)}

    await answer_command(uow, command, envelope, topic=ACCOUNTS_EVENTS, carry_out=carry_out)


__all__ = ["InvalidInput"]


async def create_account_type(uow: UnitOfWork, name: str) -> AccountType:
    async with uow:
        exists = await uow.session.scalar(select(AccountType.id).where(AccountType.name == name))
        if exists is not None:
            raise Conflict(f"an account type named {name!r} already exists")
        account_type = AccountType(name=name)
        uow.session.add(account_type)
        await uow.session.flush()
        return account_type


async def get_disconnect_status(uow: UnitOfWork) -> AccountStatus:
    async with uow:
        return await disconnect_status(uow)


async def set_disconnect_status(uow: UnitOfWork, status_id: int, *, actor: str) -> AccountStatus:
    """Choose the status disconnected accounts move to (seed 004: Billing Settings)."""
    async with uow:
        status = await get_status(uow, status_id)
        setting = await uow.session.get(Setting, DISCONNECT_STATUS_SETTING)
        if setting is None:
            uow.session.add(Setting(key=DISCONNECT_STATUS_SETTING, value=str(status.id)))
        else:
            setting.value = str(status.id)
        log.info("disconnect_status_set", status=status.name, actor=actor)
        return status
