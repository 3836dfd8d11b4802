"""Disconnections (seed 004): the disconnect itself, from the API or the scheduler's
command, and the fan-out's outcomes that other services report back, step by step."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import structlog
from sqlalchemy import select

from accounts.adapters.tables import Disconnection, DisconnectionStep
from accounts.domain.rules import StepName, StepState
from accounts.service_layer.records import (
    address_value,
    contact_ref,
    get_account,
    log_action,
    primary_contact,
    status_ref,
)
from accounts.service_layer.settings import disconnect_status
from backhaul_contracts import Envelope
from backhaul_contracts.common import Proration
from backhaul_contracts.events import accounts as events
from backhaul_contracts.events.billing import InvoiceIssued
from backhaul_contracts.events.notifications import EmailRejected, EmailSent
from backhaul_contracts.events.provisioning import AccountNetworkReleased
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit import clock
from backhaul_kit.commands import answer_command
from backhaul_kit.errors import Conflict
from backhaul_kit.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


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
        now = clock.now()
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
        uow.session.expunge(disconnection)
    return await load_disconnection(uow, disconnection_id)


async def load_disconnection(uow: UnitOfWork, disconnection_id: UUID) -> Disconnection:
    """The disconnection with its steps."""
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
    """Record a fan-out step's outcome on the disconnection it belongs to.

    Runs in the caller's open unit of work (the consumer's, for the on_* handlers below): it
    does not enter it again, which would cost a savepoint per event for nothing to undo."""
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
    row.updated_at = clock.now()
    row.result = result or {}
    row.error = error


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
