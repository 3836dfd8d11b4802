"""Replicas: what the scheduler knows of accounts, their services, and the status and
service catalogues, followed from accounts' and billing's events.

Event handlers: the consumer calls them inside its open unit of work (the inbox row, the
effect and the emitted events commit together, a batch at a time); they never enter it
again.
"""

from __future__ import annotations

from sqlalchemy import delete

from backhaul_contracts import Envelope
from backhaul_contracts.events import accounts as accounts_events
from backhaul_contracts.events import billing as billing_events
from backhaul_kit.unit_of_work import UnitOfWork
from scheduler.adapters.tables import (
    KnownAccount,
    KnownAccountService,
    KnownService,
    KnownStatus,
)


async def _known_account(uow: UnitOfWork, account_id: int, **first: object) -> KnownAccount:
    """The scheduler's replica of an account; a new one (with `first` values) if it has none."""
    account = await uow.session.get(KnownAccount, account_id)
    if account is None:
        account = KnownAccount(id=account_id, **first)
        uow.session.add(account)
    return account


async def on_account_created(
    event: accounts_events.AccountCreated, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Remember the account: events can now be scheduled on it."""
    account = await _known_account(uow, event.account_id)
    account.name = event.name
    account.status_id = event.status.id
    account.parent_id = event.parent_account_id
    account.disconnected = False
    account.updated_at = envelope.occurred_at


async def on_account_updated(
    event: accounts_events.AccountUpdated, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Follow the account's parent (a parent's disconnect does not reach its children)."""
    account = await uow.session.get(KnownAccount, event.account_id)
    if account is None:
        return  # its AccountCreated comes first on the same partition; nothing to follow
    account.name = event.name
    account.parent_id = event.parent_account_id
    account.updated_at = envelope.occurred_at


async def on_account_status_changed(
    event: accounts_events.AccountStatusChanged, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Follow the account's status; an activating status brings a disconnected one back."""
    # An account created before the scheduler's log starts: the status change is enough.
    account = await _known_account(uow, event.account_id, name="", disconnected=False)
    account.status_id = event.status.id
    account.parent_id = event.parent_account_id
    if event.status.activates_account:
        account.disconnected = False
    account.updated_at = envelope.occurred_at


async def on_account_disconnected(
    event: accounts_events.AccountDisconnected, envelope: Envelope, uow: UnitOfWork
) -> None:
    """A disconnected account takes no new scheduled events."""
    account = await _known_account(uow, event.account_id, name=event.account_name)
    account.status_id = event.status.id
    account.parent_id = event.parent_account_id
    account.disconnected = True
    account.updated_at = envelope.occurred_at


async def on_account_status_defined(
    event: accounts_events.AccountStatusDefined, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Remember the status as it now is: events can now be scheduled to move to it."""
    known = await uow.session.get(KnownStatus, event.status_id)
    if known is None:
        known = KnownStatus(id=event.status_id)
        uow.session.add(known)
    elif known.updated_at > envelope.occurred_at:
        return  # an older announcement, replayed: what we know is newer
    known.name = event.name
    known.activates_account = event.activates_account
    known.updated_at = envelope.occurred_at


async def on_account_status_deleted(
    event: accounts_events.AccountStatusDeleted, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Forget a deleted status: nothing new can be scheduled to move to it."""
    await uow.session.execute(delete(KnownStatus).where(KnownStatus.id == event.status_id))


async def on_service_defined(
    event: billing_events.ServiceDefined, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Remember the catalogue service: it can now be scheduled for addition."""
    await _know_service(uow, event.service_id, event.name, event.kind)


async def _know_service(uow: UnitOfWork, service_id: int, name: str, kind: str) -> None:
    known = await uow.session.get(KnownService, service_id)
    if known is None:
        uow.session.add(KnownService(id=service_id, name=name, kind=kind))
    else:
        known.name, known.kind = name, kind


async def on_account_service_added(
    event: billing_events.AccountServiceAdded, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Follow the account's services (a second data service would fail)."""
    await _know_service(uow, event.service.service_id, event.service.name, event.service.kind)
    if await uow.session.get(KnownAccountService, event.account_service_id) is None:
        uow.session.add(
            KnownAccountService(
                account_service_id=event.account_service_id,
                account_id=event.account_id,
                service_id=event.service.service_id,
            )
        )


async def on_account_service_removed(
    event: billing_events.AccountServiceRemoved, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Forget a service removed from the account."""
    await _know_service(uow, event.service.service_id, event.service.name, event.service.kind)
    await uow.session.execute(
        delete(KnownAccountService).where(
            KnownAccountService.account_service_id == event.account_service_id
        )
    )
