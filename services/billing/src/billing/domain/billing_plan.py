"""What a billing period owes (seeds 002, 003): the recurring debits of a batch of accounts
and the invoices they go on, as plain values. No I/O.

A billing run loads the facts, plans the period here, then writes the plan in bulk; a single
invoice (`ledger.issue_invoice`) is drafted by the same rule (`draft_invoice`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import NamedTuple

from billing.domain.rules import ZERO, Period, applicable_rate, prorate, tax_on


class AccountFacts(NamedTuple):
    """An account to bill for the period (activating, connected, not yet billed for it)."""

    id: int
    parent_id: int | None
    tax_exempt: bool
    tax_rate: Decimal | None
    currency: str


class RecurringService(NamedTuple):
    """An active recurring (or data) service of an account, with its catalogue service."""

    account_service_id: int
    account_id: int
    price: Decimal
    quantity: int
    billed_through: date | None
    service_id: int
    name: str
    tax_rate: Decimal | None
    currency: str


class WaitingDebit(NamedTuple):
    """A debit not invoiced yet (a service added mid-period, a one-time charge)."""

    id: int
    account_id: int
    amount: Decimal
    tax: Decimal


class DebitLine(NamedTuple):
    """A recurring debit the period adds."""

    account_id: int
    amount: Decimal
    tax: Decimal
    tax_rate: Decimal
    currency: str
    description: str
    service_id: int
    account_service_id: int
    quantity: int
    period_start: date
    period_end: date


class InvoicePlan(NamedTuple):
    """An invoice to issue: who it bills, its dates and its total."""

    account_id: int
    bill_to_account_id: int
    # The account's parent when the parent pays: its invoice of the period is linked.
    parent_account_id: int | None
    currency: str
    invoice_date: date
    due_date: date
    total: Decimal
    credit_total: Decimal


class PeriodPlan(NamedTuple):
    """A batch's billing for one period."""

    lines: list[DebitLine]
    # Account services now billed through the period's end (some may owe nothing).
    billed_services: list[int]
    # One per account with anything to invoice, in the order the accounts were given.
    invoices: list[InvoicePlan]


def owed_for_period(
    price: Decimal, quantity: int, billed_through: date | None, period: Period
) -> tuple[date, Decimal] | None:
    """What a recurring service owes for the period: (first day charged, amount), or None
    if it is billed through the period already."""
    if billed_through is not None and billed_through >= period.end:
        return None
    start = (
        period.start
        if billed_through is None or billed_through < period.start
        else billed_through + timedelta(days=1)
    )
    return start, prorate(price * quantity, period, start, period.end)


def draft_invoice(
    *,
    account_id: int,
    currency: str,
    invoice_date: date,
    due_days: int,
    debit_totals: Iterable[Decimal],
    credit_totals: Iterable[Decimal] = (),
    bill_to_account_id: int | None = None,
    parent_account_id: int | None = None,
) -> InvoicePlan:
    """An invoice of debits (each amount plus tax) less the credits printed on it, due
    `due_days` after its date; billed to the account itself unless a payer is given."""
    credit_total = sum(credit_totals, ZERO)
    return InvoicePlan(
        account_id,
        bill_to_account_id or account_id,
        parent_account_id,
        currency,
        invoice_date,
        invoice_date + timedelta(days=due_days),
        sum(debit_totals, ZERO) - credit_total,
        credit_total,
    )


def plan_period(
    period: Period,
    accounts: Sequence[AccountFacts],
    services: Sequence[RecurringService],
    waiting: Sequence[WaitingDebit],
    *,
    known_parents: Collection[int],
    default_tax_rate: Decimal,
    due_days: int,
) -> PeriodPlan:
    """Bill `accounts` for `period`: each recurring service for what of the period it has not
    been billed (prorated from the day after it was billed through), taxed at the account's
    applicable rate; then one invoice per account owing anything (the new debits and those
    waiting), dated the period's start. A child whose parent is known is billed to it."""
    by_id = {account.id: account for account in accounts}
    lines: list[DebitLine] = []
    billed_services: list[int] = []
    for service in services:
        owed = owed_for_period(service.price, service.quantity, service.billed_through, period)
        if owed is None:
            continue
        start, amount = owed
        billed_services.append(service.account_service_id)
        if amount <= 0:
            continue
        account = by_id[service.account_id]
        rate = applicable_rate(
            service.tax_rate, account.tax_rate, default_tax_rate, tax_exempt=account.tax_exempt
        )
        # Positional: a run builds one per service of every account it bills.
        lines.append(
            DebitLine(
                account.id,
                amount,
                tax_on(amount, rate),
                rate,
                service.currency,
                f"{service.name} x{service.quantity} {start} to {period.end}",
                service.service_id,
                service.account_service_id,
                service.quantity,
                start,
                period.end,
            )
        )
    debit_totals: dict[int, list[Decimal]] = defaultdict(list)
    for debit in waiting:
        debit_totals[debit.account_id].append(debit.amount + debit.tax)
    for line in lines:
        debit_totals[line.account_id].append(line.amount + line.tax)
    invoices = []
    for account in accounts:
        if account.id not in debit_totals:
            continue
        parent = account.parent_id if account.parent_id in known_parents else None
        invoices.append(
            draft_invoice(
                account_id=account.id,
                currency=account.currency,
                invoice_date=period.start,
                due_days=due_days,
                debit_totals=debit_totals[account.id],
                bill_to_account_id=parent,
                parent_account_id=parent,
            )
        )
    return PeriodPlan(lines=lines, billed_services=billed_services, invoices=invoices)
