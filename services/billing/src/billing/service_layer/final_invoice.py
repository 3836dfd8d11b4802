"""The final invoice of a disconnect (seed 004), written with a handful of statements.

A disconnect storm brings hundreds of these per consumer batch, so the path reads each
thing once (the account, marked disconnected as it is read; its services; its open ledger
lines) and writes with Core statements instead of ORM add + flush + refresh: the invoice
(RETURNING its id), its credit lines in one insert, its debits in one update, and the
numbers of all the batch's final invoices in one statement at commit. The ORM objects it
still changes (its services) are changed before the ledger read, whose autoflush writes
them; nothing ORM-held changes after that, and the Core writes tell the objects the
session already holds what they wrote (`sync`).

A building block of `replica.on_account_disconnected`: it runs in the consumer's open unit
of work and never commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple, cast
from uuid import UUID

from sqlalchemy import Table, and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from backhaul_contracts.common import Proration
from backhaul_contracts.events import accounts as account_events
from backhaul_contracts.events import billing as events
from backhaul_kit.clock import now
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import (
    AccountService,
    BillingAccount,
    CreditApplication,
    Invoice,
    Transaction,
)
from billing.domain import rules
from billing.domain.billing_plan import draft_invoice
from billing.domain.rules import ZERO, TransactionType
from billing.service_layer import ledger
from billing.service_layer.recurring import UnusedCredit

INVOICES = cast(Table, Invoice.__table__)
TRANSACTIONS = cast(Table, Transaction.__table__)
APPLICATIONS = cast(Table, CreditApplication.__table__)
SERVICES = cast(Table, AccountService.__table__)
CENT = Decimal("0.01")
CREDIT_TYPES = [t.value for t in rules.CREDIT_TYPES]


# The statements are built once: building and caching a statement per event costs more
# CPU than running it. They take their values as bound parameters.
_DISCONNECT = (
    update(BillingAccount)
    .where(
        BillingAccount.id == bindparam("b_account"),
        ~exists().where(Invoice.disconnection_id == bindparam("b_disconnection")),
    )
    .values(
        status_id=bindparam("b_status_id"),
        status_name=bindparam("b_status_name"),
        activates=bindparam("b_activates"),
        disconnected_at=bindparam("b_disconnected_at"),
        updated_at=bindparam("b_updated_at"),
    )
    .returning(BillingAccount)
    # Autoflushes first; the session's copy, if it holds one, takes the new row.
    .execution_options(synchronize_session=False, populate_existing=True)
)
_APPLIED = (
    select(func.coalesce(func.sum(CreditApplication.amount), 0))
    .where(CreditApplication.credit_id == Transaction.id, CreditApplication.removed_at.is_(None))
    .scalar_subquery()
)
# Mapped columns, not the table's: the select autoflushes what the handler changed.
_OPEN_LINES = (
    select(Transaction.id, Transaction.type, Transaction.amount, Transaction.tax, _APPLIED)
    .where(
        Transaction.account_id == bindparam("b_account"),
        Transaction.invoice_id.is_(None),
        or_(
            Transaction.type == TransactionType.DEBIT.value,
            and_(Transaction.type.in_(CREDIT_TYPES), Transaction.reversed.is_(False)),
        ),
    )
    .order_by(Transaction.id)
)
_INSERT_INVOICE = (
    insert(INVOICES)
    .values(
        final=True,
        manual=False,
        **{
            name: bindparam(f"b_{name}", type_=INVOICES.c[name].type)
            for name in (
                "account_id",
                "bill_to_account_id",
                "issued_at",
                "invoice_date",
                "due_date",
                "currency",
                "total",
                "disconnection_id",
            )
        },
    )
    .returning(INVOICES.c.id)
)
_INVOICE_DEBITS = (
    update(TRANSACTIONS)
    .where(TRANSACTIONS.c.id.in_(bindparam("b_ids", expanding=True)))
    .values(invoice_id=bindparam("b_invoice"))
)
_BILLED_THROUGH = (
    update(SERVICES)
    .where(SERVICES.c.id.in_(bindparam("b_ids", expanding=True)))
    .values(billed_through=bindparam("b_day"))
)
_INSERT_TRANSACTIONS = insert(TRANSACTIONS)
_NUMBER = (
    update(INVOICES).where(INVOICES.c.id == bindparam("b_id")).values(number=bindparam("b_number"))
)


class OpenLine(NamedTuple):
    """An uninvoiced debit, or a credit with something left to apply (`left`)."""

    id: int
    type: str
    total: Decimal
    left: Decimal


class FinalInvoice(NamedTuple):
    id: int
    number: str
    total: Decimal


async def disconnect_account(
    uow: UnitOfWork, event: account_events.AccountDisconnected
) -> BillingAccount | None:
    """Mark the account disconnected and load it, in one UPDATE ... RETURNING, unless this
    disconnection already has its invoice. None: no such account, or already invoiced.

    On PostgreSQL the UPDATE row-locks the account for the rest of the transaction (as the
    other ledger writers' FOR UPDATE does): the lines it is about to invoice cannot move
    under it. SQLite's BEGIN IMMEDIATE already serialises writers."""
    rows = await uow.session.scalars(
        _DISCONNECT,
        {
            "b_account": event.account_id,
            "b_disconnection": event.disconnection_id,
            "b_status_id": event.status.id,
            "b_status_name": event.status.name,
            "b_activates": event.status.activates_account,
            "b_disconnected_at": event.disconnected_at,
            "b_updated_at": now(),
        },
    )
    return rows.one_or_none()


async def invoice_of(uow: UnitOfWork, disconnection_id: UUID) -> int | None:
    """The id of the invoice this disconnection already has (it may be anyone's)."""
    return await uow.session.scalar(
        select(Invoice.id).where(Invoice.disconnection_id == disconnection_id)
    )


async def billed_through(uow: UnitOfWork, account_service_ids: list[int], day: date) -> None:
    """The services are billed through `day` from now on: one UPDATE for them all, instead
    of an ORM flush of each (their objects are told, as loaded). They were just loaded,
    by a query that flushed, and are not changed otherwise: nothing of theirs is pending."""
    if account_service_ids:
        await uow.session.execute(_BILLED_THROUGH, {"b_ids": account_service_ids, "b_day": day})
        sync(uow, AccountService, account_service_ids, billed_through=day)


async def open_lines(uow: UnitOfWork, account_id: int) -> list[OpenLine]:
    """The account's uninvoiced debits and its credits with something left to apply, oldest
    first, in one query."""
    rows = await uow.session.execute(_OPEN_LINES, {"b_account": account_id})
    lines = []
    for id_, type_, amount, tax, used in rows.all():
        total = amount + tax
        left = total - Decimal(used or 0).quantize(CENT)
        if type_ == TransactionType.DEBIT.value or left > 0:
            lines.append(OpenLine(id_, type_, total, left))
    return lines


def _credit_row(
    account: BillingAccount, credit: UnusedCredit, actor: str, moment: datetime
) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "type": TransactionType.DISCOUNT.value,
        "amount": credit.amount,
        "tax": credit.tax,
        "tax_rate": credit.tax_rate,
        "currency": account.currency,
        "description": credit.description,
        "service_id": credit.service_id,
        "account_service_id": credit.account_service_id,
        "quantity": credit.quantity,
        "period_start": credit.period_start,
        "period_end": credit.period_end,
        "invoice_id": None,
        "created_at": moment,
        "created_by": actor,
    }


class FittedCredits(NamedTuple):
    rows: list[dict[str, Any]]  # transaction rows, `invoice_id` not filled in yet
    on_invoice: list[bool]  # whether each row is a line of the invoice
    line_totals: list[Decimal]


def fit_credits(
    account: BillingAccount,
    credits: Sequence[UnusedCredit],
    debit_total: Decimal,
    actor: str,
) -> FittedCredits:
    """The credits' transaction rows, and which of them are lines of the invoice.

    Credits shown as lines of an invoice may not take it below zero: the excess is split
    off as an ordinary available credit (its own row, after the credits), to be applied to
    what the account still owes.
    """
    moment = now()
    room = debit_total
    rows: list[dict[str, Any]] = []
    on_invoice: list[bool] = []
    excesses: list[dict[str, Any]] = []
    line_totals: list[Decimal] = []
    for credit in credits:
        row = _credit_row(account, credit, actor, moment)
        rows.append(row)
        total = credit.amount + credit.tax
        on_invoice.append(total <= room or room > 0)
        if total <= room:
            line_totals.append(total)
            room -= total
            continue
        if room > 0:
            # The split keeps the total exact; tax detail stays on the debit.
            row.update(amount=room, tax=ZERO)
            line_totals.append(room)
            excess = total - room
            room = ZERO
        else:
            row.update(amount=total, tax=ZERO)
            continue  # entirely available credit
        excesses.append(
            {
                **_credit_row(account, credit, actor, moment),
                "amount": excess,
                "tax": ZERO,
                "tax_rate": None,
                "description": f"{credit.description} (beyond the final invoice)",
                "quantity": None,
                "period_start": None,
                "period_end": None,
            }
        )
    return FittedCredits(rows + excesses, on_invoice + [False] * len(excesses), line_totals)


async def issue_final_invoice(
    uow: UnitOfWork,
    account: BillingAccount,
    *,
    credits: Sequence[UnusedCredit],
    actor: str,
    disconnection_id: UUID,
    invoice_date: date,
    proration: Proration,
) -> FinalInvoice:
    """Invoice the account's uninvoiced debits less the credits that fit, apply its waiting
    credits to what is left, and emit InvoiceIssued (final), as `ledger.issue_invoice` does."""
    lines = await open_lines(uow, account.id)
    debits = [line for line in lines if line.type == TransactionType.DEBIT.value]
    waiting = [line for line in lines if line.type != TransactionType.DEBIT.value]
    fitted = fit_credits(account, credits, sum((d.total for d in debits), ZERO), actor)
    issued = now()
    plan = draft_invoice(
        account_id=account.id,
        currency=account.currency,
        invoice_date=invoice_date,
        due_days=int(await ledger.setting(uow, rules.SETTING_DUE_DAYS)),
        debit_totals=(d.total for d in debits),
        credit_totals=fitted.line_totals,
    )
    session = uow.session
    invoice_id: int = (
        await session.execute(
            _INSERT_INVOICE,
            {
                "b_account_id": account.id,
                "b_bill_to_account_id": plan.bill_to_account_id,
                "b_issued_at": issued,
                "b_invoice_date": plan.invoice_date,
                "b_due_date": plan.due_date,
                "b_currency": plan.currency,
                "b_total": plan.total,
                "b_disconnection_id": disconnection_id,
            },
        )
    ).scalar_one()
    number = rules.invoice_number(invoice_id)
    _number_at_commit(uow, invoice_id)
    if fitted.rows:
        for row, line in zip(fitted.rows, fitted.on_invoice, strict=True):
            row["invoice_id"] = invoice_id if line else None
        await session.execute(_INSERT_TRANSACTIONS, fitted.rows)
    if debits:
        debit_ids = [d.id for d in debits]
        await session.execute(_INVOICE_DEBITS, {"b_ids": debit_ids, "b_invoice": invoice_id})
        sync(uow, Transaction, debit_ids, invoice_id=invoice_id)
    if plan.total > 0 and waiting:
        # Only a final invoice with something left to pay takes waiting credits; one whose
        # credits overflowed is at zero, so the split-off excess is never among them.
        allocations = rules.allocate_credits(
            [(line.id, line.left) for line in waiting], [(invoice_id, plan.total)]
        )
        if allocations:
            await session.execute(
                insert(APPLICATIONS),
                [
                    {
                        "credit_id": a.credit_id,
                        "invoice_id": invoice_id,
                        "amount": a.amount,
                        "applied_at": issued,
                    }
                    for a in allocations
                ],
            )
    await uow.emit(
        events.InvoiceIssued(
            account_id=account.id,
            invoice_id=invoice_id,
            number=number,
            total=plan.total,
            currency=plan.currency,
            issued_at=issued,
            due_date=plan.due_date,
            period_start=None,
            period_end=None,
            final=True,
            disconnection_id=disconnection_id,
            debit_ids=[d.id for d in debits],
            bill_to_account_id=plan.bill_to_account_id,
            parent_invoice_id=None,
            credit_total=plan.credit_total,
            proration=proration,
        ),
        subject=account.id,
    )
    return FinalInvoice(invoice_id, number, plan.total)


NUMBERING = "billing_final_invoices_to_number"
"""The key in `session.info` of the final invoices the transaction has still to number."""


def _number_at_commit(uow: UnitOfWork, invoice_id: int) -> None:
    """The number is the id's (rules.invoice_number), so it can only be written once the
    id exists: the transaction's final invoices are numbered with one statement before it
    commits, instead of one UPDATE each. Unique and gap-free as before (it is still the
    id's); only this transaction could see them unnumbered meanwhile, and none of the
    consumer's handlers reads invoice numbers (the event carries the number)."""
    uow.session.info.setdefault(NUMBERING, []).append(invoice_id)
    uow.before_commit(_write_numbers)


async def _write_numbers(uow: UnitOfWork) -> None:
    invoice_ids: list[int] = uow.session.info.pop(NUMBERING, [])
    if invoice_ids:
        await uow.session.execute(
            _NUMBER,
            [{"b_id": i, "b_number": rules.invoice_number(i)} for i in invoice_ids],
        )


def sync(uow: UnitOfWork, model: type[Any], ids: Iterable[int], **values: object) -> None:
    """Objects of these rows the session already holds take the values a Core statement
    wrote, as loaded (not as changes to flush), so the rest of the transaction sees them."""
    identity_map = uow.session.sync_session.identity_map
    for id_ in ids:
        held = identity_map.get(identity_key(model, id_))
        if held is not None:
            for name, value in values.items():
                set_committed_value(held, name, value)
