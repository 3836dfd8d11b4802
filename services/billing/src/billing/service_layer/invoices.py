"""Invoices: manual ones, editing and freezing, voiding, applying credits, deleting and
linking a child's invoice to its parent's.

API-called: each handler owns its unit of work."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import structlog
from sqlalchemy import select

from backhaul_contracts.events import billing as events
from backhaul_kit.clock import now
from backhaul_kit.errors import Conflict, InvalidInput
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import CreditApplication, Invoice, Transaction
from billing.domain import rules
from billing.domain.money import parse_amount
from billing.domain.rules import ZERO, TransactionType
from billing.service_layer import ledger
from billing.service_layer.delinquency import evaluate_delinquency
from billing.service_layer.ledger import InvoiceDraft, get_account, get_invoice

log = structlog.get_logger(__name__)


async def create_manual_invoice(uow: UnitOfWork, account_id: int, *, actor: str) -> Invoice:
    """Invoice every uninvoiced debit of the account now."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        debits = await ledger.uninvoiced_debits(uow, account.id)
        if not debits:
            raise Conflict(f"account {account_id} has no uninvoiced debits to invoice")
        return await ledger.issue_invoice(uow, account, InvoiceDraft(debits=debits, manual=True))


async def edit_invoice(
    uow: UnitOfWork,
    invoice_id: int,
    *,
    frozen: bool | None,
    message: str | None,
    message_given: bool,
) -> Invoice:
    """Freeze or unfreeze an invoice, or change its printed message (not while frozen)."""
    async with uow:
        invoice = await get_invoice(uow, invoice_id)
        if invoice.void:
            raise Conflict(f"invoice {invoice.number} is void and locked")
        if message_given:
            if invoice.frozen and frozen is not False:
                raise Conflict(f"invoice {invoice.number} is frozen: unfreeze it to edit it")
            invoice.message = message
        if frozen is not None:
            invoice.frozen = frozen
        if frozen is False:
            await ledger.apply_available_credits(uow, invoice.bill_to_account_id, only=invoice)
        return invoice


async def void_invoice(uow: UnitOfWork, invoice_id: int, *, actor: str) -> Invoice:
    """Void: take off every applied credit, reverse every debit with a discount that zeroes
    the invoice, then lock it.

    Credits printed on the invoice (a final invoice's unused-days credit) are not undone:
    they pay back service billed on an earlier invoice, which the void does not touch, so
    what of the reversals they leave over stays an available credit of the account."""
    async with uow:
        invoice = await get_invoice(uow, invoice_id)
        ledger.refuse_if_locked(invoice, "void it")
        account = await get_account(uow, invoice.account_id, for_update=True)
        moment = now()
        for application in (
            await uow.session.scalars(
                select(CreditApplication).where(
                    CreditApplication.invoice_id == invoice.id,
                    CreditApplication.removed_at.is_(None),
                )
            )
        ).all():
            application.removed_at = moment
        lines = (
            await uow.session.scalars(
                select(Transaction).where(Transaction.invoice_id == invoice.id)
            )
        ).all()
        remaining = invoice.total
        for debit in lines:
            if debit.type != TransactionType.DEBIT.value:
                continue
            if debit.reversed:
                reversal = await uow.session.scalar(
                    select(Transaction).where(Transaction.reverses_id == debit.id)
                )
            else:
                debit.reversed = True
                reversal = await ledger.record_credit(
                    uow,
                    account,
                    type_=TransactionType.DISCOUNT,
                    amount=debit.amount,
                    tax=debit.tax,
                    description=f"Reversal of {debit.description} (invoice void)",
                    actor=actor,
                    reverses_id=debit.id,
                    service_id=debit.service_id,
                )
            if reversal is None or remaining <= 0:
                continue
            wanted = min(ledger.total_of(reversal), remaining)
            amount = min(await ledger.available_of(uow, reversal), wanted)
            if amount < wanted:
                # The debit was reversed earlier and its reversal has since paid other
                # invoices: it comes back here, where its debit is, and those invoices
                # reopen (to be paid below from whatever credit the void frees).
                amount += await ledger.take_back(uow, reversal, wanted - amount)
            if amount > 0:
                ledger.apply(uow, reversal, invoice, amount)
                remaining -= amount
        invoice.void = True
        invoice.voided_at = moment
        invoice.voided_by = actor
        invoice.delinquent = False
        await uow.session.flush()
        # Payments taken off the void invoice go on to pay whatever else is open.
        await ledger.apply_available_credits(uow, invoice.bill_to_account_id)
        await uow.emit(
            events.InvoiceVoided(
                account_id=account.id,
                invoice_id=invoice.id,
                number=invoice.number or "",
                voided_at=moment,
                voided_by=actor,
            ),
            subject=account.id,
        )
        payer = await get_account(uow, invoice.bill_to_account_id)
        await evaluate_delinquency(uow, payer, moment.date())
        return invoice


async def apply_credits(
    uow: UnitOfWork, invoice_id: int, amount: Decimal | None, *, actor: str
) -> Invoice:
    """Apply the payer's available credits to one invoice (all that fits, or `amount`)."""
    async with uow:
        invoice = await get_invoice(uow, invoice_id)
        ledger.refuse_if_locked(invoice, "apply credits to it")
        await get_account(uow, invoice.bill_to_account_id, for_update=True)
        limit = None
        if amount is not None:
            limit = parse_amount(amount)
            if limit <= 0:
                raise InvalidInput(f"amount {limit} must be positive")
            available = sum(
                (
                    left
                    for _, left in await ledger.available_credits(uow, invoice.bill_to_account_id)
                ),
                ZERO,
            )
            remaining = await ledger.remaining_on(uow, invoice)
            if limit > available:
                raise Conflict(f"only {available} of credits are available, not {limit}")
            if limit > remaining:
                raise Conflict(f"invoice {invoice.number} has only {remaining} remaining")
        await ledger.apply_available_credits(
            uow, invoice.bill_to_account_id, only=invoice, limit=limit
        )
        return invoice


async def delete_invoice(uow: UnitOfWork, invoice_id: int, *, actor: str) -> None:
    """Delete a manually created invoice dated after the accounting period's close; its
    debits become uninvoiced again and its credits available."""
    async with uow:
        invoice = await get_invoice(uow, invoice_id)
        if not invoice.manual:
            raise Conflict(f"invoice {invoice.number} was not created manually: void it instead")
        ledger.refuse_if_locked(invoice, "delete it")
        close = await ledger.setting(uow, rules.SETTING_PERIOD_CLOSE)
        if close and invoice.invoice_date <= date.fromisoformat(close):
            raise Conflict(
                f"invoice {invoice.number} is dated {invoice.invoice_date}, not after the "
                f"accounting period close {close}"
            )
        for application in (
            await uow.session.scalars(
                select(CreditApplication).where(CreditApplication.invoice_id == invoice.id)
            )
        ).all():
            await uow.session.delete(application)
        for line in (
            await uow.session.scalars(
                select(Transaction).where(Transaction.invoice_id == invoice.id)
            )
        ).all():
            line.invoice_id = None
        await uow.session.flush()
        await uow.session.delete(invoice)
        log.info("invoice_deleted", invoice_id=invoice_id, actor=actor)


async def link_invoice(
    uow: UnitOfWork, parent_invoice_id: int, child_invoice_id: int, *, link: bool
) -> Invoice:
    """Link (or unlink) a child account's invoice to its parent's: the repair the seed allows
    when the billing process linked wrongly."""
    async with uow:
        parent_invoice = await get_invoice(uow, parent_invoice_id)
        child_invoice = await get_invoice(uow, child_invoice_id)
        child = await get_account(uow, child_invoice.account_id)
        if child.parent_id != parent_invoice.account_id:
            raise Conflict(
                f"account {child.id} is not a child of account {parent_invoice.account_id}"
            )
        ledger.refuse_if_locked(child_invoice, "relink it")
        if await ledger.paid_on(uow, child_invoice.id) > 0:
            # Its payer's credits pay it: moving it to another payer would strand them.
            raise Conflict(
                f"invoice {child_invoice.number} already has credits applied: it can only be "
                "relinked while nothing is paid on it"
            )
        if link:
            child_invoice.parent_invoice_id = parent_invoice.id
            child_invoice.bill_to_account_id = parent_invoice.account_id
        else:
            if child_invoice.parent_invoice_id != parent_invoice.id:
                raise Conflict(
                    f"invoice {child_invoice.number} is not linked to {parent_invoice.number}"
                )
            child_invoice.parent_invoice_id = None
            child_invoice.bill_to_account_id = child.id
        return child_invoice
