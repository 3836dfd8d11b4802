"""The ledger's building blocks, shared by the handlers: they run inside a handler's open
unit of work and never commit. Debits, credits, credit applications and invoices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy import bindparam, func, select

from backhaul_contracts.common import Proration
from backhaul_contracts.events import billing as events
from backhaul_kit.clock import now
from backhaul_kit.errors import Conflict, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import (
    AccountService,
    BillingAccount,
    CreditApplication,
    Invoice,
    Service,
    Setting,
    Transaction,
)
from billing.domain import rules
from billing.domain.billing_plan import draft_invoice
from billing.domain.rules import ZERO, Period, TransactionType

UNKNOWN_ACCOUNT = (
    "billing does not know account {id} (yet): it learns of accounts from their "
    "AccountCreated event"
)


def as_utc(moment: datetime) -> datetime:
    """SQLite gives timestamps back naive; they were stored as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- lookups ------------------------------------------------------------------------------


async def get_account(
    uow: UnitOfWork, account_id: int, *, for_update: bool = False
) -> BillingAccount:
    statement = select(BillingAccount).where(BillingAccount.id == account_id)
    if for_update and not uow.db.is_sqlite:
        # SQLite's BEGIN IMMEDIATE already serialises writers; PostgreSQL needs the row lock
        # so two concurrent additions cannot both see "no data service yet".
        statement = statement.with_for_update()
    account = (await uow.session.execute(statement)).scalar_one_or_none()
    if account is None:
        raise NotFound(UNKNOWN_ACCOUNT.format(id=account_id))
    return account


async def get_service(uow: UnitOfWork, service_id: int) -> Service:
    return await uow.get(Service, service_id, not_found=f"service {service_id} not found")


async def get_invoice(uow: UnitOfWork, invoice_id: int) -> Invoice:
    return await uow.get(Invoice, invoice_id, not_found=f"invoice {invoice_id} not found")


SETTINGS_CACHE = "billing_settings"
"""The key in `session.info` under which a transaction keeps the global settings."""


async def setting(uow: UnitOfWork, key: str) -> str:
    """A global setting's stored value, else its default.

    All of them are read with one query, once per transaction (the session's `info` dies
    with it): a missing row (a default) is no row to find in the identity map, so a
    consumer batch would otherwise ask again for every event. `update_settings` drops the
    cache when it writes."""
    cached: dict[str, str] | None = uow.session.info.get(SETTINGS_CACHE)
    if cached is None:
        rows = await uow.session.execute(select(Setting.key, Setting.value))
        cached = dict(rules.DEFAULT_SETTINGS)
        cached.update({k: v for k, v in rows.all()})
        uow.session.info[SETTINGS_CACHE] = cached
    return cached[key]


def forget_settings(uow: UnitOfWork) -> None:
    """Drop the transaction's cached settings (after writing one)."""
    uow.session.info.pop(SETTINGS_CACHE, None)


async def global_proration(uow: UnitOfWork) -> Proration:
    return Proration(await setting(uow, rules.SETTING_PRORATION))


# Built once: a consumer batch asks this for every event.
_ACTIVE_SERVICES = (
    select(AccountService)
    .where(AccountService.account_id == bindparam("b_account"), AccountService.removed_at.is_(None))
    .order_by(AccountService.id)
)


async def active_services(uow: UnitOfWork, account_id: int) -> list[AccountService]:
    rows = await uow.session.scalars(_ACTIVE_SERVICES, {"b_account": account_id})
    return list(rows.unique().all())


# -- debits and credits -------------------------------------------------------------------


async def tax_rate_for(
    uow: UnitOfWork, account: BillingAccount, service: Service | None
) -> Decimal:
    default = Decimal(await setting(uow, rules.SETTING_DEFAULT_TAX_RATE))
    return rules.applicable_rate(
        service.tax_rate if service else None,
        account.tax_rate,
        default,
        tax_exempt=account.tax_exempt,
    )


async def record_debit(
    uow: UnitOfWork,
    account: BillingAccount,
    *,
    amount: Decimal,
    description: str,
    actor: str,
    service: Service | None = None,
    account_service: AccountService | None = None,
    quantity: int | None = None,
    period: tuple[date, date] | None = None,
) -> Transaction:
    """A charge, taxed at the account's applicable rate (shown on the debit)."""
    rate = await tax_rate_for(uow, account, service)
    debit = Transaction(
        account_id=account.id,
        type=TransactionType.DEBIT.value,
        amount=amount,
        tax=rules.tax_on(amount, rate),
        tax_rate=rate,
        currency=service.currency if service else account.currency,
        description=description,
        service_id=service.id if service else None,
        account_service_id=account_service.id if account_service else None,
        quantity=quantity,
        period_start=period[0] if period else None,
        period_end=period[1] if period else None,
        created_at=now(),
        created_by=actor,
    )
    uow.session.add(debit)
    await uow.session.flush()
    return debit


async def record_credit(
    uow: UnitOfWork,
    account: BillingAccount,
    *,
    type_: TransactionType,
    amount: Decimal,
    description: str,
    actor: str,
    tax: Decimal = ZERO,
    **fields: object,
) -> Transaction:
    credit = Transaction(
        account_id=account.id,
        type=type_.value,
        amount=amount,
        tax=tax,
        currency=account.currency,
        description=description,
        created_at=now(),
        created_by=actor,
        **fields,
    )
    uow.session.add(credit)
    await uow.session.flush()
    return credit


def total_of(transaction: Transaction) -> Decimal:
    return transaction.amount + transaction.tax


async def applied_from(uow: UnitOfWork, credit_id: int) -> Decimal:
    value = await uow.session.scalar(
        select(func.coalesce(func.sum(CreditApplication.amount), 0)).where(
            CreditApplication.credit_id == credit_id, CreditApplication.removed_at.is_(None)
        )
    )
    return Decimal(value or 0).quantize(Decimal("0.01"))


async def paid_on(uow: UnitOfWork, invoice_id: int) -> Decimal:
    value = await uow.session.scalar(
        select(func.coalesce(func.sum(CreditApplication.amount), 0)).where(
            CreditApplication.invoice_id == invoice_id, CreditApplication.removed_at.is_(None)
        )
    )
    return Decimal(value or 0).quantize(Decimal("0.01"))


async def available_of(uow: UnitOfWork, credit: Transaction) -> Decimal:
    """What is left of a credit to apply. An invoice-line credit is consumed by its invoice."""
    if credit.reversed or credit.invoice_id is not None:
        return ZERO
    return total_of(credit) - await applied_from(uow, credit.id)


async def available_credits(uow: UnitOfWork, account_id: int) -> list[tuple[Transaction, Decimal]]:
    """The account's credits with something left to apply, oldest first."""
    rows = await uow.session.scalars(
        select(Transaction)
        .where(
            Transaction.account_id == account_id,
            Transaction.type.in_([t.value for t in rules.CREDIT_TYPES]),
            Transaction.reversed.is_(False),
            Transaction.invoice_id.is_(None),
        )
        .order_by(Transaction.id)
    )
    out = []
    for credit in rows.all():
        left = await available_of(uow, credit)
        if left > 0:
            out.append((credit, left))
    return out


async def remaining_on(uow: UnitOfWork, invoice: Invoice) -> Decimal:
    if invoice.void:
        return ZERO
    return invoice.total - await paid_on(uow, invoice.id)


def apply(uow: UnitOfWork, credit: Transaction, invoice: Invoice, amount: Decimal) -> None:
    uow.session.add(
        CreditApplication(
            credit_id=credit.id, invoice_id=invoice.id, amount=amount, applied_at=now()
        )
    )


async def take_back(uow: UnitOfWork, credit: Transaction, amount: Decimal) -> Decimal:
    """Take up to `amount` of a credit back off the invoices it pays, newest application
    first, so it can be applied elsewhere. Frozen invoices cannot change (409). Returns
    how much was taken back."""
    applications = (
        await uow.session.scalars(
            select(CreditApplication)
            .where(CreditApplication.credit_id == credit.id, CreditApplication.removed_at.is_(None))
            .order_by(CreditApplication.id.desc())
        )
    ).all()
    taken = ZERO
    moment = now()
    for application in applications:
        if taken >= amount:
            break
        paid = await get_invoice(uow, application.invoice_id)
        if paid.frozen:
            raise Conflict(
                f"{credit.type} {credit.id} pays frozen invoice {paid.number}: unfreeze it first"
            )
        part = min(application.amount, amount - taken)
        application.removed_at = moment
        if part < application.amount:
            apply(uow, credit, paid, application.amount - part)
        taken += part
    await uow.session.flush()
    return taken


async def apply_available_credits(
    uow: UnitOfWork, payer_id: int, *, only: Invoice | None = None, limit: Decimal | None = None
) -> Decimal:
    """Pay the payer's open invoices (oldest first, never frozen or void ones) from its
    available credits (oldest first). Returns how much was applied."""
    if only is not None:
        invoices = [only]
    else:
        invoices = list(
            (
                await uow.session.scalars(
                    select(Invoice)
                    .where(
                        Invoice.bill_to_account_id == payer_id,
                        Invoice.void.is_(False),
                        Invoice.frozen.is_(False),
                    )
                    .order_by(Invoice.invoice_date, Invoice.id)
                )
            ).all()
        )
    credits = await available_credits(uow, payer_id)
    if not credits:
        return ZERO
    open_invoices = [(invoice, await remaining_on(uow, invoice)) for invoice in invoices]
    by_id = {credit.id: credit for credit, _ in credits}
    invoices_by_id = {invoice.id: invoice for invoice in invoices}
    allocations = rules.allocate_credits(
        [(credit.id, left) for credit, left in credits],
        [(invoice.id, remaining) for invoice, remaining in open_invoices],
        limit,
    )
    applied = ZERO
    for allocation in allocations:
        apply(
            uow,
            by_id[allocation.credit_id],
            invoices_by_id[allocation.invoice_id],
            allocation.amount,
        )
        applied += allocation.amount
    await uow.session.flush()
    return applied


# -- invoices -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceDraft:
    debits: Sequence[Transaction]
    line_credits: Sequence[Transaction] = ()
    period: Period | None = None
    final: bool = False
    manual: bool = False
    disconnection_id: UUID | None = None
    bill_to_account_id: int | None = None
    parent_invoice_id: int | None = None
    billing_run_id: int | None = None
    invoice_date: date | None = None
    proration: Proration | None = None


async def issue_invoice(uow: UnitOfWork, account: BillingAccount, draft: InvoiceDraft) -> Invoice:
    """Create an invoice of the given debits (and invoice-line credits), apply the payer's
    available credits to it, and emit InvoiceIssued."""
    issued = now()
    plan = draft_invoice(
        account_id=account.id,
        currency=account.currency,
        invoice_date=draft.invoice_date or issued.date(),
        due_days=int(await setting(uow, rules.SETTING_DUE_DAYS)),
        debit_totals=(total_of(d) for d in draft.debits),
        credit_totals=(total_of(c) for c in draft.line_credits),
        bill_to_account_id=draft.bill_to_account_id,
    )
    invoice = Invoice(
        account_id=account.id,
        bill_to_account_id=plan.bill_to_account_id,
        parent_invoice_id=draft.parent_invoice_id,
        issued_at=issued,
        invoice_date=plan.invoice_date,
        due_date=plan.due_date,
        period_start=draft.period.start if draft.period else None,
        period_end=draft.period.end if draft.period else None,
        currency=plan.currency,
        total=plan.total,
        final=draft.final,
        manual=draft.manual,
        disconnection_id=draft.disconnection_id,
        billing_run_id=draft.billing_run_id,
    )
    uow.session.add(invoice)
    await uow.session.flush()
    invoice.number = rules.invoice_number(invoice.id)
    for transaction in (*draft.debits, *draft.line_credits):
        transaction.invoice_id = invoice.id
    await uow.session.flush()
    await apply_available_credits(uow, invoice.bill_to_account_id, only=invoice)
    await uow.emit(
        events.InvoiceIssued(
            account_id=account.id,
            invoice_id=invoice.id,
            number=invoice.number,
            total=invoice.total,
            currency=invoice.currency,
            issued_at=issued,
            due_date=invoice.due_date,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            final=invoice.final,
            disconnection_id=invoice.disconnection_id,
            debit_ids=[d.id for d in draft.debits],
            bill_to_account_id=invoice.bill_to_account_id,
            parent_invoice_id=invoice.parent_invoice_id,
            credit_total=plan.credit_total,
            proration=draft.proration,
        ),
        subject=account.id,
    )
    return invoice


async def uninvoiced_debits(uow: UnitOfWork, account_id: int) -> list[Transaction]:
    rows = await uow.session.scalars(
        select(Transaction)
        .where(
            Transaction.account_id == account_id,
            Transaction.type == TransactionType.DEBIT.value,
            Transaction.invoice_id.is_(None),
        )
        .order_by(Transaction.id)
    )
    return list(rows.all())


def refuse_if_locked(invoice: Invoice, action: str) -> None:
    if invoice.void:
        raise Conflict(f"invoice {invoice.number} is void and locked: cannot {action}")
    if invoice.frozen:
        raise Conflict(f"invoice {invoice.number} is frozen: unfreeze it to {action}")
