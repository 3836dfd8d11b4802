"""Billing rules (seeds 002, 003, 004): periods, proration, taxes, balances. No I/O."""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum

from backhaul_contracts.common import Proration, ServiceKind
from backhaul_kit.errors import InvalidInput
from billing.domain.money import round_money

ZERO = Decimal("0.00")


class TransactionType(StrEnum):
    DEBIT = "debit"  # a charge for a service, with quantity and tax
    DISCOUNT = "discount"  # a credit applied by a service or a reversal
    PAYMENT = "payment"  # a credit applied by a payment method
    PAYMENT_REVERSAL = "payment_reversal"  # takes a payment's credit back


CREDIT_TYPES = frozenset({TransactionType.DISCOUNT, TransactionType.PAYMENT})


class PaymentMethod(StrEnum):
    CASH = "cash"
    CHECK = "check"
    WIRE = "wire"
    CREDIT_CARD = "credit_card"  # only ever a processor's token, never a card number
    BANK_ACCOUNT = "bank_account"  # only ever a processor's token, never an account number


TOKENISED_METHODS = frozenset({PaymentMethod.CREDIT_CARD, PaymentMethod.BANK_ACCOUNT})

RECURRING_KINDS = frozenset({ServiceKind.RECURRING, ServiceKind.DATA})


class InvoiceState(StrEnum):
    OPEN = "open"  # remaining > 0, not past due + grace
    PAID = "paid"
    DELINQUENT = "delinquent"  # past its due date plus the grace period and not paid
    VOID = "void"


SETTING_PRORATION = "final_invoice_proration"
SETTING_DUE_DAYS = "invoice_due_days"
SETTING_GRACE_DAYS = "delinquency_grace_days"
SETTING_PERIOD_CLOSE = "accounting_period_close"
SETTING_DEFAULT_TAX_RATE = "default_tax_rate"

DEFAULT_SETTINGS: dict[str, str] = {
    SETTING_PRORATION: Proration.CREDIT_UNUSED.value,
    SETTING_DUE_DAYS: "14",
    SETTING_GRACE_DAYS: "7",
    SETTING_PERIOD_CLOSE: "",
    SETTING_DEFAULT_TAX_RATE: "0",
}


# -- periods ----------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or that month's last day if it is shorter (Jan 31 + 1
    month is Feb 28 or 29). Billing days are 1-28, but dates from callers may be any day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Period:
    """A billing period: from a billing day to the day before the next one, inclusive."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def next(self) -> Period:
        return period_starting(add_months(self.start, 1))


def period_starting(start: date) -> Period:
    return Period(start, add_months(start, 1) - timedelta(days=1))


def period_containing(day: date, billing_day: int) -> Period:
    """The billing period of an account with `billing_day` that contains `day`."""
    if not 1 <= billing_day <= 28:
        raise InvalidInput(f"billing day {billing_day} is not between 1 and 28")
    start = date(day.year, day.month, billing_day)
    if day < start:
        start = add_months(start, -1)
    return period_starting(start)


# -- proration ----------------------------------------------------------------------------


def prorate(amount: Decimal, period: Period, first_day: date, last_day: date) -> Decimal:
    """`amount` for the days first_day..last_day (inclusive) of `period`, rounded once.

    A day costs amount / days-in-period, so a day of February 2024 (29 days) costs more
    than a day of March; days outside the period are not charged.
    """
    first = max(first_day, period.start)
    last = min(last_day, period.end)
    if last < first:
        return ZERO
    used = (last - first).days + 1
    if used == period.days:
        return round_money(amount)
    return round_money(amount * used / period.days)


def addition_charge(
    line_amount: Decimal, period: Period, added_on: date, prorates: bool
) -> Decimal:
    """The debit for a recurring service added on `added_on`: the rest of its period."""
    if not prorates:
        return round_money(line_amount)
    return prorate(line_amount, period, added_on, period.end)


def unused_credit(line_amount: Decimal, period: Period, last_used_day: date) -> Decimal:
    """The credit for a period billed in full but used only through `last_used_day`."""
    return prorate(line_amount, period, last_used_day + timedelta(days=1), period.end)


def effective_proration(requested: Proration, global_setting: Proration) -> Proration:
    """A disconnect's proration choice, where `inherit` means the global setting."""
    if requested is Proration.INHERIT:
        return global_setting if global_setting is not Proration.INHERIT else Proration.NONE
    return requested


# -- taxes ---------------------------------------------------------------------------------


def parse_rate(value: Decimal | str, *, what: str = "tax rate") -> Decimal:
    """A tax rate in percent, 0-100, at most four decimals."""
    try:
        rate = Decimal(value)
    except ArithmeticError:
        raise InvalidInput(f"{what} {value!r} is not a number") from None
    if not rate.is_finite() or rate < 0 or rate > 100:
        raise InvalidInput(f"{what} {value} must be between 0 and 100 percent")
    if rate != rate.quantize(Decimal("0.0001")):
        raise InvalidInput(f"{what} {value} has more than 4 decimals")
    return rate


def applicable_rate(
    service_rate: Decimal | None,
    account_rate: Decimal | None,
    default_rate: Decimal,
    *,
    tax_exempt: bool,
) -> Decimal:
    """The rate a debit is taxed at: exempt accounts pay none; an account's override wins."""
    if tax_exempt:
        return Decimal(0)
    if account_rate is not None:
        return account_rate
    if service_rate is not None:
        return service_rate
    return default_rate


def tax_on(amount: Decimal, rate: Decimal) -> Decimal:
    return round_money(amount * rate / 100)


# -- balances (the Invoices banner of seed 003) ---------------------------------------------


@dataclass(frozen=True)
class Balances:
    balance_due: Decimal  # remaining on every issued, not void invoice
    available_credits: Decimal  # credits not applied to any invoice
    uninvoiced_debits: Decimal
    total_balance: Decimal  # due invoices + uninvoiced debits - credits waiting to be applied
    next_recurring_charge: Decimal


def balances(
    *,
    invoice_remaining: Iterable[Decimal],
    available_credits: Decimal,
    uninvoiced_debits: Decimal,
    next_recurring_charge: Decimal,
) -> Balances:
    """The banner. Total balance nets the available credits so it always equals the running
    balance of the ledger (debits minus credits): a credit not yet applied is still owed back.
    """
    due = sum(invoice_remaining, ZERO)
    return Balances(
        balance_due=due,
        available_credits=available_credits,
        uninvoiced_debits=uninvoiced_debits,
        total_balance=due + uninvoiced_debits - available_credits,
        next_recurring_charge=next_recurring_charge,
    )


@dataclass(frozen=True)
class Allocation:
    credit_id: int
    invoice_id: int
    amount: Decimal


def allocate_credits(
    credits: Sequence[tuple[int, Decimal]],
    invoices: Sequence[tuple[int, Decimal]],
    limit: Decimal | None = None,
) -> list[Allocation]:
    """Spread available credits (id, left), oldest first, over invoices (id, remaining),
    oldest first, never paying an invoice beyond what remains or more than `limit` in all."""
    out: list[Allocation] = []
    pending = [(credit_id, left) for credit_id, left in credits if left > 0]
    budget = limit
    for invoice_id, remaining in invoices:
        while remaining > 0 and pending and (budget is None or budget > 0):
            credit_id, left = pending[0]
            amount = min(left, remaining)
            if budget is not None:
                amount = min(amount, budget)
                budget -= amount
            out.append(Allocation(credit_id, invoice_id, amount))
            remaining -= amount
            if left == amount:
                pending.pop(0)
            else:
                pending[0] = (credit_id, left - amount)
    return out


def invoice_state(
    *, void: bool, remaining: Decimal, due_date: date, today: date, grace_days: int
) -> InvoiceState:
    if void:
        return InvoiceState.VOID
    if remaining <= 0:
        return InvoiceState.PAID
    if today > due_date + timedelta(days=grace_days):
        return InvoiceState.DELINQUENT
    return InvoiceState.OPEN


def months_covered(start: date | None, end: date | None) -> int:
    """How many billing months an invoice covers (at least one once it has dates)."""
    if start is None or end is None:
        return 0
    months = (end.year - start.year) * 12 + end.month - start.month
    return max(1, months + (1 if end.day >= start.day else 0))


def invoice_number(invoice_id: int) -> str:
    return f"INV-{invoice_id:06d}"
