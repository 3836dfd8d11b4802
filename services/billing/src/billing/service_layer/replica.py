"""Billing's replica of the accounts (accounts.events.v1): name, status (and whether it
activates billing), parent and billing day, and the final invoice of a disconnect.

Consumer-called: each on_* handler works in the consumer's open unit of work (its inbox
row, its effect and its events commit together) and never enters it again."""

from __future__ import annotations

import structlog
from sqlalchemy import select

from backhaul_contracts import Envelope
from backhaul_contracts.common import Proration, ServiceKind
from backhaul_contracts.events import accounts as account_events
from backhaul_kit.clock import now
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import BillingAccount, Invoice, Transaction
from billing.domain import rules
from billing.domain.rules import ZERO, TransactionType
from billing.service_layer import ledger, recurring
from billing.service_layer.ledger import InvoiceDraft, get_account

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
    if account.activates:
        account.disconnected_at = None  # back in service
    if account.activates and not was_billed:
        for account_service in await ledger.active_services(uow, account.id):
            await recurring.start_billing(
                uow,
                account,
                account_service,
                ledger.as_utc(event.changed_at).date(),
                actor=event.changed_by,
            )


async def on_account_disconnected(
    event: account_events.AccountDisconnected, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The final invoice (seed 004), exactly once per disconnection.

    The inbox drops a redelivered event; the unique disconnection id on invoices stops a
    second copy of the same disconnection arriving under another event id. An account with
    no uninvoiced debits still gets its (zero) final invoice: the disconnect's progress on
    accounts waits for this InvoiceIssued.
    """
    existing = await uow.session.scalar(
        select(Invoice.id).where(Invoice.disconnection_id == event.disconnection_id)
    )
    if existing is not None:
        log.info("final_invoice_exists", disconnection_id=str(event.disconnection_id))
        return
    if await uow.session.get(BillingAccount, event.account_id) is None:
        # An account billing never heard of (created before billing was deployed) still
        # gets its (empty) final invoice, or the disconnect would never complete.
        uow.session.add(
            BillingAccount(
                id=event.account_id,
                name=event.account_name,
                status_id=event.status.id,
                status_name=event.status.name,
                activates=event.status.activates_account,
                parent_id=event.parent_account_id,
                billing_day=1,
                updated_at=now(),
            )
        )
        await uow.session.flush()
    account = await get_account(uow, event.account_id, for_update=True)
    account.status_id = event.status.id
    account.status_name = event.status.name
    account.activates = event.status.activates_account
    account.disconnected_at = event.disconnected_at
    account.updated_at = now()
    day = ledger.as_utc(event.disconnected_at).date()
    proration = rules.effective_proration(event.proration, await ledger.global_proration(uow))
    credits: list[Transaction] = []
    for account_service in await ledger.active_services(uow, account.id):
        if ServiceKind(account_service.service.kind) not in rules.RECURRING_KINDS:
            continue
        if proration is Proration.CREDIT_UNUSED:
            credit = await recurring.credit_unused(
                uow, account, account_service, day, actor=event.disconnected_by
            )
            if credit is not None:
                credits.append(credit)
    debits = await ledger.uninvoiced_debits(uow, account.id)
    line_credits = await _fit_credits(uow, account, credits, debits, event.disconnected_by)
    invoice = await ledger.issue_invoice(
        uow,
        account,
        InvoiceDraft(
            debits=debits,
            line_credits=line_credits,
            final=True,
            disconnection_id=event.disconnection_id,
            invoice_date=day,
            proration=proration,
        ),
    )
    log.info(
        "final_invoice_issued",
        account_id=account.id,
        invoice_id=invoice.id,
        total=str(invoice.total),
        proration=proration.value,
        disconnection_id=str(event.disconnection_id),
    )


async def _fit_credits(
    uow: UnitOfWork,
    account: BillingAccount,
    credits: list[Transaction],
    debits: list[Transaction],
    actor: str,
) -> list[Transaction]:
    """Credits shown as lines of an invoice may not take it below zero: the excess is split
    off as an ordinary available credit, to be applied to what the account still owes."""
    room = sum((ledger.total_of(d) for d in debits), ZERO)
    lines: list[Transaction] = []
    for credit in credits:
        total = ledger.total_of(credit)
        if total <= room:
            lines.append(credit)
            room -= total
            continue
        if room > 0:
            credit.tax = ZERO  # the split keeps the total exact; tax detail stays on the debit
            credit.amount = room
            lines.append(credit)
            excess = total - room
            room = ZERO
        else:
            credit.amount, credit.tax = total, ZERO
            continue  # entirely available credit
        await ledger.record_credit(
            uow,
            account,
            type_=TransactionType.DISCOUNT,
            amount=excess,
            actor=actor,
            description=f"{credit.description} (beyond the final invoice)",
            service_id=credit.service_id,
            account_service_id=credit.account_service_id,
        )
    await uow.session.flush()
    return lines
