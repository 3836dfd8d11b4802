"""Recurring billing of an account's services: charging the rest of the period when it
starts, crediting the unused days when it stops. Building blocks that run in the caller's
open unit of work (an API handler's or the consumer's) and never commit."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import NamedTuple

from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import AccountService, BillingAccount, Transaction
from billing.domain import rules
from billing.domain.rules import TransactionType
from billing.service_layer import ledger


async def start_billing(
    uow: UnitOfWork,
    account: BillingAccount,
    account_service: AccountService,
    day: date,
    actor: str,
) -> None:
    """Charge a recurring service for the rest of the current period (prorated if it
    prorates), unless that period is already billed."""
    period = rules.period_containing(day, account.billing_day)
    if account_service.billed_through is not None and account_service.billed_through >= period.end:
        return
    service = account_service.service
    line = account_service.price * account_service.quantity
    charge = rules.addition_charge(line, period, day, account_service.prorates)
    if charge > 0:
        await ledger.record_debit(
            uow,
            account,
            amount=charge,
            actor=actor,
            service=service,
            account_service=account_service,
            quantity=account_service.quantity,
            period=(day if account_service.prorates else period.start, period.end),
            description=f"{service.name} x{account_service.quantity} "
            f"{day if account_service.prorates else period.start} to {period.end}",
        )
    account_service.billed_through = period.end


def billed_after(account_service: AccountService, day: date) -> bool:
    """Whether the service is billed beyond `day` (so stopping it on `day` moves it back)."""
    return account_service.billed_through is not None and account_service.billed_through > day


class UnusedCredit(NamedTuple):
    """The credit for the unused days of a recurring service, as values to record."""

    amount: Decimal
    tax: Decimal
    tax_rate: Decimal
    description: str
    service_id: int
    account_service_id: int
    quantity: int
    period_start: date
    period_end: date


async def unused_credit(
    uow: UnitOfWork, account: BillingAccount, account_service: AccountService, day: date
) -> UnusedCredit | None:
    """What to credit for the part of the billed periods after `day` (used through `day`),
    or None. Changes nothing: the caller records the credit and moves `billed_through`
    back to `day` when `billed_after(account_service, day)` (the final invoice writes both
    for all its services in bulk)."""
    billed_through = account_service.billed_through
    if billed_through is None or billed_through <= day:
        return None
    period = rules.period_containing(day, account.billing_day)
    line = account_service.price * account_service.quantity
    credit = rules.unused_credit(line, period, day)
    following = period.next()
    while following.end <= billed_through:  # whole periods billed in advance
        credit += rules.round_money(line)
        following = following.next()
    if credit <= 0:
        return None
    rate = await ledger.tax_rate_for(uow, account, account_service.service)
    return UnusedCredit(
        amount=credit,
        tax=rules.tax_on(credit, rate),
        tax_rate=rate,
        description=f"Unused {account_service.service.name} from {day + timedelta(days=1)} "
        f"to {billed_through}",
        service_id=account_service.service_id,
        account_service_id=account_service.id,
        quantity=account_service.quantity,
        period_start=day + timedelta(days=1),
        period_end=billed_through,
    )


async def credit_unused(
    uow: UnitOfWork,
    account: BillingAccount,
    account_service: AccountService,
    day: date,
    *,
    actor: str,
) -> Transaction | None:
    """Credit the part of the billed periods after `day` (used through `day`)."""
    credit = await unused_credit(uow, account, account_service, day)
    if billed_after(account_service, day):
        account_service.billed_through = day
    if credit is None:
        return None
    return await ledger.record_credit(
        uow,
        account,
        type_=TransactionType.DISCOUNT,
        amount=credit.amount,
        tax=credit.tax,
        tax_rate=credit.tax_rate,
        actor=actor,
        description=credit.description,
        service_id=credit.service_id,
        account_service_id=credit.account_service_id,
        quantity=credit.quantity,
        period_start=credit.period_start,
        period_end=credit.period_end,
    )
