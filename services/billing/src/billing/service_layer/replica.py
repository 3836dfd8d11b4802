"""Billing's replica of the accounts (accounts.events.v1): name, status (and whether it
activates billing), parent and billing day, and the final invoice of a disconnect.

Consumer-called: each on_* handler works in the consumer's open unit of work (its inbox
row, its effect and its events commit together) and never enters it again."""

from __future__ import annotations

from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, bindparam, update

from backhaul_contracts import Envelope
from backhaul_contracts.common import Proration, ServiceKind
from backhaul_contracts.events import accounts as account_events
from backhaul_kit.clock import now
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import BillingAccount
from billing.domain import rules
from billing.service_layer import final_invoice, ledger, recurring

log = structlog.get_logger(__name__)


async def on_account_created(
    event: account_events.AccountCreated, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Start the account's replica: status (and whether it activates), parent, billing day."""
    account = await uow.session.get(BillingAccount, event.account_id)
    if account is None:
        account = BillingAccount(id=event.account_id)
        uow.session.add(account)
    account.name = event.name
    account.status_id = event.status.id
    account.status_name = event.status.name
    account.activates = event.status.activates_account
    account.parent_id = event.parent_account_id
    account.billing_day = event.billing_day
    account.updated_at = now()


async def on_account_updated(
    event: account_events.AccountUpdated, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Follow the account's name, parent and billing day."""
    account = await uow.session.get(BillingAccount, event.account_id)
    if account is None:
        log.warning("account_update_for_unknown_account", account_id=event.account_id)
        return
    account.name = event.name
    account.parent_id = event.parent_account_id
    account.billing_day = event.billing_day
    account.updated_at = now()


async def on_account_status_changed(
    event: account_events.AccountStatusChanged, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Billing follows the status: entering an activating status starts recurring billing
    (the rest of the current period); leaving one stops it (billing runs skip the account)."""
    if not event.status.activates_account:
        # Nothing to start, so the old status does not matter: one UPDATE, no read.
        await _set_status(uow, event)
        return
    account = await uow.session.get(BillingAccount, event.account_id)
    if account is None:
        log.warning("status_change_for_unknown_account", account_id=event.account_id)
        return
    was_billed = account.activates
    account.status_id = event.status.id
    account.status_name = event.status.name
    account.activates = event.status.activates_account
    account.parent_id = event.parent_account_id
    account.updated_at = now()
    account.disconnected_at = None  # back in service
    if not was_billed:
        for account_service in await ledger.active_services(uow, account.id):
            await recurring.start_billing(
                uow,
                account,
                account_service,
                ledger.as_utc(event.changed_at).date(),
                actor=event.changed_by,
            )


_SET_STATUS_COLUMNS = ("status_id", "status_name", "activates", "parent_id", "updated_at")
# Built once (building a statement per event costs more than running it). An ORM-enabled
# UPDATE autoflushes first: an account created earlier in the batch may not be written yet.
_SET_STATUS = (
    update(BillingAccount)
    .where(BillingAccount.id == bindparam("b_account"))
    .values({name: bindparam(f"b_{name}") for name in _SET_STATUS_COLUMNS})
    .execution_options(synchronize_session=False)
)


async def _set_status(uow: UnitOfWork, event: account_events.AccountStatusChanged) -> None:
    values = {
        "status_id": event.status.id,
        "status_name": event.status.name,
        "activates": event.status.activates_account,
        "parent_id": event.parent_account_id,
        "updated_at": now(),
    }
    result = await uow.session.execute(
        _SET_STATUS, {"b_account": event.account_id, **{f"b_{k}": v for k, v in values.items()}}
    )
    if cast(CursorResult[Any], result).rowcount == 0:
        log.warning("status_change_for_unknown_account", account_id=event.account_id)
        return
    # The session's copy of the account, if it holds one, is told.
    final_invoice.sync(uow, BillingAccount, [event.account_id], **values)


async def on_account_disconnected(
    event: account_events.AccountDisconnected, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The final invoice (seed 004), exactly once per disconnection.

    The inbox drops a redelivered event; the unique disconnection id on invoices stops a
    second copy of the same disconnection arriving under another event id. An account with
    no uninvoiced debits still gets its (zero) final invoice: the disconnect's progress on
    accounts waits for this InvoiceIssued. Unused days are credited (on the invoice, as
    far as they fit) when the disconnect's proration, or the global one it inherits, says so.
    """
    account = await final_invoice.disconnect_account(uow, event)
    if account is None:
        if await final_invoice.invoice_of(uow, event.disconnection_id) is not None:
            log.info("final_invoice_exists", disconnection_id=str(event.disconnection_id))
            return
        # An account billing never heard of (created before billing was deployed) still
        # gets its (empty) final invoice, or the disconnect would never complete.
        account = BillingAccount(
            id=event.account_id,
            name=event.account_name,
            status_id=event.status.id,
            status_name=event.status.name,
            activates=event.status.activates_account,
            parent_id=event.parent_account_id,
            billing_day=1,
            disconnected_at=event.disconnected_at,
            updated_at=now(),
        )
        uow.session.add(account)
        await uow.session.flush()
    day = ledger.as_utc(event.disconnected_at).date()
    proration = rules.effective_proration(event.proration, await ledger.global_proration(uow))
    credits: list[recurring.UnusedCredit] = []
    if proration is Proration.CREDIT_UNUSED:
        stopped: list[int] = []
        for account_service in await ledger.active_services(uow, account.id):
            if ServiceKind(account_service.service.kind) not in rules.RECURRING_KINDS:
                continue
            credit = await recurring.unused_credit(uow, account, account_service, day)
            if credit is not None:
                credits.append(credit)
            if recurring.billed_after(account_service, day):
                stopped.append(account_service.id)
        await final_invoice.billed_through(uow, stopped, day)
    invoice = await final_invoice.issue_final_invoice(
        uow,
        account,
        credits=credits,
        actor=event.disconnected_by,
        disconnection_id=event.disconnection_id,
        invoice_date=day,
        proration=proration,
    )
    log.info(
        "final_invoice_issued",
        account_id=account.id,
        invoice_id=invoice.id,
        total=str(invoice.total),
        proration=proration.value,
        disconnection_id=str(event.disconnection_id),
    )
