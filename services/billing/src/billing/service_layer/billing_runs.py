"""Billing runs: for a date, bill every activating account whose billing day it is."""

from __future__ import annotations

from datetime import date

import structlog
from sqlalchemy import select

from backhaul_contracts.common import ServiceKind
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import BilledPeriod, BillingAccount, BillingRun
from billing.domain import rules
from billing.service_layer import handlers, ledger
from billing.service_layer.ledger import InvoiceDraft, now

log = structlog.get_logger(__name__)


async def _bill_account(
    uow: UnitOfWork, account: BillingAccount, period: rules.Period, run: BillingRun
) -> bool:
    """Recurring debits for the period and their invoice; False if already billed.

    A child account's invoice is billed to its parent (who pays the children's recurring
    invoices) and linked to the parent's invoice of the same period when there is one.
    """
    if await uow.session.get(BilledPeriod, (account.id, period.start)) is not None:
        return False
    for account_service in await ledger.active_services(uow, account.id):
        if ServiceKind(account_service.service.kind) not in rules.RECURRING_KINDS:
            continue
        through = account_service.billed_through
        if through is not None and through >= period.end:
            continue
        start = period.start if through is None or through < period.start else through
        line = account_service.price * account_service.quantity
        charge = (
            rules.round_money(line)
            if start == period.start
            else rules.prorate(line, period, start, period.end)
        )
        if charge > 0:
            service = account_service.service
            await ledger.record_debit(
                uow,
                account,
                amount=charge,
                actor=f"billing-run:{run.id}",
                service=service,
                account_service=account_service,
                quantity=account_service.quantity,
                period=(start, period.end),
                description=f"{service.name} x{account_service.quantity} {start} to {period.end}",
            )
        account_service.billed_through = period.end
    debits = await ledger.uninvoiced_debits(uow, account.id)
    invoice = None
    if debits:
        bill_to, parent_invoice_id = account.id, None
        if account.parent_id is not None and await uow.session.get(
            BillingAccount, account.parent_id
        ):
            bill_to = account.parent_id
            parent_period = await uow.session.get(BilledPeriod, (account.parent_id, period.start))
            parent_invoice_id = parent_period.invoice_id if parent_period else None
        invoice = await ledger.issue_invoice(
            uow,
            account,
            InvoiceDraft(
                debits=debits,
                period=period,
                bill_to_account_id=bill_to,
                parent_invoice_id=parent_invoice_id,
                billing_run_id=run.id,
                invoice_date=period.start,
            ),
        )
        run.invoices_issued += 1
        totals = dict(run.total or {})
        totals[invoice.currency] = str(
            rules.round_money(ledger.Decimal(totals.get(invoice.currency, "0")) + invoice.total)
        )
        run.total = totals
    uow.session.add(
        BilledPeriod(
            account_id=account.id,
            period_start=period.start,
            billing_run_id=run.id,
            invoice_id=invoice.id if invoice else None,
        )
    )
    return True


async def run_billing(uow: UnitOfWork, run_date: date, *, actor: str) -> BillingRun:
    """Bill every activating, connected account whose billing day is `run_date`'s day for the
    period starting that day, then re-evaluate delinquency.

    Each account is billed in its own transaction and marked billed for the period in it, so
    a rerun (or a run that crashed halfway) bills only the accounts still unbilled. Parents
    go first so their children's invoices can be linked to theirs.
    """
    async with uow:
        run = BillingRun(run_date=run_date, started_at=now(), requested_by=actor, total={})
        uow.session.add(run)
        await uow.session.flush()
        run_id = run.id
        accounts = list(
            (
                await uow.session.scalars(
                    select(BillingAccount.id)
                    .where(
                        BillingAccount.activates.is_(True),
                        BillingAccount.disconnected_at.is_(None),
                        BillingAccount.billing_day == run_date.day,
                    )
                    .order_by(BillingAccount.parent_id.is_not(None), BillingAccount.id)
                )
            ).all()
        )
    period = rules.period_starting(run_date)
    for account_id in accounts:
        async with uow:
            run = await uow.session.get_one(BillingRun, run_id)
            account = await ledger.get_account(uow, account_id, for_update=True)
            billed = await _bill_account(uow, account, period, run)
            if billed:
                run.accounts_billed += 1
            else:
                run.accounts_skipped += 1
    await handlers.check_delinquency(uow, run_date)
    async with uow:
        run = await uow.session.get_one(BillingRun, run_id)
        run.finished_at = now()
    log.info(
        "billing_run_finished",
        run_id=run_id,
        run_date=str(run_date),
        billed=run.accounts_billed,
        skipped=run.accounts_skipped,
    )
    return run
