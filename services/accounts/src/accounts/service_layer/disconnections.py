"""Disconnections (seed 004): the disconnect itself, from the API or the scheduler's
command, and the fan-out's outcomes that other services report back, step by step."""

from __future__ import annotations

import typing
from typing import Any
from uuid import UUID, uuid4

import structlog
from sqlalchemy import CursorResult, Table, and_, bindparam, select, update
from sqlalchemy.orm import aliased, lazyload

from accounts.adapters.tables import (
    Account,
    AccountStatus,
    Contact,
    Disconnection,
    DisconnectionStep,
)
from accounts.domain.rules import StepName, StepState
from accounts.service_layer.records import address_value, contact_ref, log_action, status_ref
from accounts.service_layer.settings import configured_disconnect_status, disconnect_status
from backhaul_contracts import Envelope
from backhaul_contracts.common import Proration
from backhaul_contracts.events import accounts as events
from backhaul_contracts.events.billing import InvoiceIssued
from backhaul_contracts.events.notifications import EmailRejected, EmailSent
from backhaul_contracts.events.provisioning import AccountNetworkReleased
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit import clock
from backhaul_kit.commands import answer_command
from backhaul_kit.errors import Conflict, NotFound
from backhaul_kit.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


async def _account_to_disconnect(
    uow: UnitOfWork, account_id: int
) -> tuple[Account, Contact | None, AccountStatus | None]:
    """The account (with its status and address), its primary contact and the disconnect
    status, in one query: the disconnect needs nothing else (not its groups or type)."""
    target = aliased(AccountStatus)
    statement = (
        select(Account, Contact, target)
        .outerjoin(Contact, and_(Contact.account_id == Account.id, Contact.is_primary))
        .outerjoin(target, configured_disconnect_status(target))
        .where(Account.id == account_id)
        .order_by(Contact.id)
        .options(
            lazyload(Account.account_type), lazyload(Account.contacts), lazyload(Account.groups)
        )
    )
    if not uow.db.is_sqlite:
        statement = statement.with_for_update(of=Account)
    row = (await uow.session.execute(statement)).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    account, contact, status = row
    return account, contact, status


async def disconnect(
    uow: UnitOfWork, account_id: int, *, actor: str, proration: Proration = Proration.INHERIT
) -> Disconnection:
    """Disconnect (never delete) an account, in one transaction (seed 004).

    Moves it to the configured disconnect status, frees its serviceable address, writes the
    disconnection log with a pending step per fan-out effect, and emits AccountDisconnected.
    Its children are left as they are. Returns the disconnection with its steps, as written
    (built here, not read back).
    """
    async with uow:
        account, contact, target = await _account_to_disconnect(uow, account_id)
        if account.disconnected_at is not None:
            raise Conflict(f"account {account_id} is already disconnected")
        if target is None:  # no such status: disconnect_status says which one is missing
            target = await disconnect_status(uow)
        previous = account.status
        now = clock.now()
        address = account.serviceable_address
        released = address_value(address)
        if address is not None:
            address.account_id = None
        account.status_id = target.id
        account.status = target
        account.disconnected_at = now
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
        email_state = StepState.PENDING if contact and contact.email else StepState.SKIPPED
        steps = [
            DisconnectionStep(
                step=step.value,
                state=state.value,
                updated_at=now,
                result={} if state is StepState.PENDING else {"reason": "no primary contact email"},
                error=None,
            )
            for step, state in (
                (StepName.FINAL_INVOICE, StepState.PENDING),
                (StepName.NETWORK_RELEASE, StepState.PENDING),
                (StepName.EMAIL, email_state),
            )
        ]
        # In the order a read gives them (by step name), so the answer is what a GET shows.
        steps.sort(key=lambda row: row.step)
        uow.session.add(
            Disconnection(
                id=disconnection_id,
                account_id=account.id,
                disconnected_at=now,
                disconnected_by=actor,
                address=released.model_dump() if released else None,
                previous_status_id=previous.id,
                status_id=target.id,
                proration=proration.value,
                event_id=envelope.event_id,
                steps=steps,
            )
        )
        log_action(
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
        return steps[0].disconnection


_steps = typing.cast(Table, DisconnectionStep.__table__)
# Built once: a completion event is one UPDATE that leaves a done step done.
_RECORD_STEP = (
    update(_steps)
    .where(
        _steps.c.disconnection_id == bindparam("key_disconnection_id"),
        _steps.c.step == bindparam("key_step"),
        _steps.c.state != StepState.DONE.value,
    )
    .values(
        state=bindparam("new_state"),
        updated_at=bindparam("new_updated_at"),
        result=bindparam("new_result"),
        error=bindparam("new_error"),
    )
)
_STEP_STATE = select(_steps.c.state).where(
    _steps.c.disconnection_id == bindparam("key_disconnection_id"),
    _steps.c.step == bindparam("key_step"),
)


async def record_step(
    uow: UnitOfWork,
    disconnection_id: UUID,
    step: StepName,
    state: StepState,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """Record a fan-out step's outcome on the disconnection it belongs to; a done step stays
    done (a later failure report cannot undo it).

    Runs in the caller's open unit of work (the consumer's, for the on_* handlers below): it
    does not enter it again, which would cost a savepoint per event for nothing to undo. One
    UPDATE, no ORM load; only when it changes nothing is the step looked up, to tell a done
    step (nothing to say) from an unknown one (a warning)."""
    if uow.session.new:
        await uow.session.flush()  # a Core statement does not autoflush pending steps
    key = {"key_disconnection_id": disconnection_id, "key_step": step.value}
    changed = typing.cast(
        CursorResult[Any],
        await uow.session.execute(
            _RECORD_STEP,
            {
                **key,
                "new_state": state.value,
                "new_updated_at": clock.now(),
                "new_result": result or {},
                "new_error": error,
            },
        ),
    )
    if changed.rowcount:
        return
    if await uow.session.scalar(_STEP_STATE, key) is None:
        log.warning(
            "disconnection_step_unknown",
            disconnection_id=str(disconnection_id),
            step=step.value,
        )


# -- the fan-out's outcomes, reported by the other services ---------------------------------


async def on_invoice_issued(event: InvoiceIssued, envelope: Envelope, uow: UnitOfWork) -> None:
    """Billing issued an invoice: a final one marks the final-invoice step done."""
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
    """Provisioning released the account's IPs and list entries: that step is done."""
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
    """Notifications sent the disconnection email: that step is done."""
    if event.disconnection_id is not None:
        await record_step(
            uow,
            event.disconnection_id,
            StepName.EMAIL,
            StepState.DONE,
            result={"email_id": str(event.email_id), "recipient": event.recipient},
        )


async def on_email_rejected(event: EmailRejected, envelope: Envelope, uow: UnitOfWork) -> None:
    """Notifications could not send the disconnection email: that step failed (unless done)."""
    if event.disconnection_id is not None:
        await record_step(
            uow,
            event.disconnection_id,
            StepName.EMAIL,
            StepState.FAILED,
            result={"email_id": str(event.email_id), "recipient": event.recipient},
            error=event.reason,
        )


# -- the scheduler's command ----------------------------------------------------------------


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
