"""Delinquency of one account: re-evaluated after whatever changes what it owes (a payment,
a reversal, a void). A building block of the handlers: it runs in their open unit of work.
(A billing run checks every account at once: billing_runs.check_delinquency.)"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from backhaul_contracts.events import billing as events
from backhaul_kit.clock import now
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import BillingAccount, Invoice
from billing.domain import rules
from billing.service_layer import ledger


async def evaluate_delinquency(uow: UnitOfWork, account: BillingAccount, today: date) -> None:
    """Mark invoices past due plus the grace period; announce the account's change."""
    grace = int(await ledger.setting(uow, rules.SETTING_GRACE_DAYS))
    invoices = (
        await uow.session.scalars(
            select(Invoice).where(Invoice.bill_to_account_id == account.id, Invoice.void.is_(False))
        )
    ).all()
    late: list[int] = []
    for invoice in invoices:
        remaining = await ledger.remaining_on(uow, invoice)
        state = rules.invoice_state(
            void=False,
            remaining=remaining,
            due_date=invoice.due_date,
            today=today,
            grace_days=grace,
        )
        invoice.delinquent = state is rules.InvoiceState.DELINQUENT
        if invoice.delinquent:
            late.append(invoice.id)
    delinquent = bool(late)
    if delinquent != account.delinquent:
        account.delinquent = delinquent
        await uow.emit(
            events.AccountDelinquencyChanged(
                account_id=account.id, delinquent=delinquent, invoice_ids=late, changed_at=now()
            ),
            subject=account.id,
        )
