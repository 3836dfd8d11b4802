"""Read-side queries of the billing API: views assembled from the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import select

from backhaul_contracts.common import ServiceKind
from backhaul_kit.clock import now
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import (
    AccountService,
    BillingAccount,
    BillingRun,
    Invoice,
    Package,
    Service,
    Transaction,
)
from billing.domain import rules
from billing.domain.rules import ZERO, TransactionType
from billing.service_layer import ledger


async def list_services(uow: UnitOfWork) -> list[Service]:
    async with uow:
        return list((await uow.session.scalars(select(Service).order_by(Service.id))).all())


async def get_service(uow: UnitOfWork, service_id: int) -> Service:
    async with uow:
        return await ledger.get_service(uow, service_id)


async def list_packages(uow: UnitOfWork) -> list[Package]:
    async with uow:
        return list((await uow.session.scalars(select(Package).order_by(Package.id))).all())


async def list_account_services(
    uow: UnitOfWork, account_id: int, *, include_removed: bool = False
) -> list[AccountService]:
    async with uow:
        await ledger.get_account(uow, account_id)
        statement = select(AccountService).where(AccountService.account_id == account_id)
        if not include_removed:
            statement = statement.where(AccountService.removed_at.is_(None))
        rows = await uow.session.scalars(statement.order_by(AccountService.id))
        return list(rows.unique().all())


async def get_account(uow: UnitOfWork, account_id: int) -> tuple[BillingAccount, list[int]]:
    """The billing view of an account and the ids of its child accounts."""
    async with uow:
        account = await ledger.get_account(uow, account_id)
        children = (
            await uow.session.scalars(
                select(BillingAccount.id)
                .where(BillingAccount.parent_id == account_id)
                .order_by(BillingAccount.id)
            )
        ).all()
        return account, list(children)


@dataclass
class InvoiceView:
    invoice: Invoice
    paid: Decimal
    remaining: Decimal
    state: rules.InvoiceState
    months: int
    lines: list[Transaction]
    child_invoices: list[InvoiceView] = field(default_factory=list)

    @property
    def children_remaining(self) -> Decimal:
        return sum((c.remaining for c in self.child_invoices), ZERO)


async def _invoice_view(
    uow: UnitOfWork, invoice: Invoice, today: date, grace: int, *, children: bool = True
) -> InvoiceView:
    paid = ZERO if invoice.void else await ledger.paid_on(uow, invoice.id)
    remaining = await ledger.remaining_on(uow, invoice)
    lines = list(
        (
            await uow.session.scalars(
                select(Transaction)
                .where(Transaction.invoice_id == invoice.id)
                .order_by(Transaction.id)
            )
        ).all()
    )
    view = InvoiceView(
        invoice=invoice,
        paid=paid if not invoice.void else invoice.total,
        remaining=remaining,
        state=rules.invoice_state(
            void=invoice.void,
            remaining=remaining,
            due_date=invoice.due_date,
            today=today,
            grace_days=grace,
        ),
        months=rules.months_covered(invoice.period_start, invoice.period_end),
        lines=lines,
    )
    if children:
        for child in (
            await uow.session.scalars(
                select(Invoice).where(Invoice.parent_invoice_id == invoice.id).order_by(Invoice.id)
            )
        ).all():
            view.child_invoices.append(
                await _invoice_view(uow, child, today, grace, children=False)
            )
    return view


async def list_invoices(uow: UnitOfWork, account_id: int) -> list[InvoiceView]:
    """The account's own invoices and those of its children billed to it, newest first."""
    async with uow:
        await ledger.get_account(uow, account_id)
        grace = int(await ledger.setting(uow, rules.SETTING_GRACE_DAYS))
        today = now().date()
        invoices = (
            await uow.session.scalars(
                select(Invoice).where(Invoice.account_id == account_id).order_by(Invoice.id.desc())
            )
        ).all()
        return [await _invoice_view(uow, invoice, today, grace) for invoice in invoices]


async def get_invoice(uow: UnitOfWork, invoice_id: int) -> InvoiceView:
    async with uow:
        invoice = await ledger.get_invoice(uow, invoice_id)
        grace = int(await ledger.setting(uow, rules.SETTING_GRACE_DAYS))
        return await _invoice_view(uow, invoice, now().date(), grace)


@dataclass
class TransactionView:
    transaction: Transaction
    total: Decimal
    balance: Decimal  # the account's running balance after this transaction


def signed(transaction: Transaction) -> Decimal:
    """What a transaction does to the balance owed: debits add, credits subtract."""
    total = ledger.total_of(transaction)
    if transaction.type in (TransactionType.DEBIT.value, TransactionType.PAYMENT_REVERSAL.value):
        return total
    return -total


async def list_transactions(uow: UnitOfWork, account_id: int) -> list[TransactionView]:
    """Every transaction of the account, oldest first, with the running balance."""
    async with uow:
        await ledger.get_account(uow, account_id)
        rows = (
            await uow.session.scalars(
                select(Transaction)
                .where(Transaction.account_id == account_id)
                .order_by(Transaction.id)
            )
        ).all()
        running = ZERO
        out = []
        for transaction in rows:
            running += signed(transaction)
            out.append(TransactionView(transaction, ledger.total_of(transaction), running))
        return out


async def get_transaction(uow: UnitOfWork, transaction_id: int) -> Transaction:
    async with uow:
        return await uow.get(
            Transaction, transaction_id, not_found=f"transaction {transaction_id} not found"
        )


async def account_balances(
    uow: UnitOfWork, account_id: int
) -> tuple[BillingAccount, rules.Balances]:
    """The Invoices banner of seed 003 for the account."""
    async with uow:
        account = await ledger.get_account(uow, account_id)
        invoices = (
            await uow.session.scalars(
                select(Invoice).where(
                    Invoice.bill_to_account_id == account_id, Invoice.void.is_(False)
                )
            )
        ).all()
        remaining = [await ledger.remaining_on(uow, invoice) for invoice in invoices]
        available = sum((left for _, left in await ledger.available_credits(uow, account_id)), ZERO)
        uninvoiced = sum(
            (ledger.total_of(d) for d in await ledger.uninvoiced_debits(uow, account_id)), ZERO
        )
        next_charge = ZERO
        for account_service in await ledger.active_services(uow, account_id):
            if ServiceKind(account_service.service.kind) not in rules.RECURRING_KINDS:
                continue
            line = rules.round_money(account_service.price * account_service.quantity)
            rate = await ledger.tax_rate_for(uow, account, account_service.service)
            next_charge += line + rules.tax_on(line, rate)
        return account, rules.balances(
            invoice_remaining=remaining,
            available_credits=available,
            uninvoiced_debits=uninvoiced,
            next_recurring_charge=next_charge,
        )


async def list_billing_runs(uow: UnitOfWork) -> list[BillingRun]:
    async with uow:
        return list(
            (await uow.session.scalars(select(BillingRun).order_by(BillingRun.id.desc()))).all()
        )


async def get_billing_run(uow: UnitOfWork, run_id: int) -> BillingRun:
    async with uow:
        return await uow.get(BillingRun, run_id, not_found=f"billing run {run_id} not found")
