"""The billing plan of a period: pure, so checked on plain values."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from billing.domain.billing_plan import (
    AccountFacts,
    RecurringService,
    WaitingDebit,
    draft_invoice,
    plan_period,
)
from billing.domain.rules import period_starting

APRIL = period_starting(date(2026, 4, 1))


def service(
    account_service_id: int,
    account_id: int,
    price: str,
    billed_through: date | None = None,
    tax_rate: str | None = None,
) -> RecurringService:
    return RecurringService(
        account_service_id=account_service_id,
        account_id=account_id,
        price=Decimal(price),
        quantity=1,
        billed_through=billed_through,
        service_id=100 + account_service_id,
        name=f"Service {account_service_id}",
        tax_rate=Decimal(tax_rate) if tax_rate else None,
        currency="USD",
    )


def test_a_period_bills_what_is_not_billed_yet_and_invoices_each_account_owing():
    parent = AccountFacts(1, None, tax_exempt=False, tax_rate=None, currency="USD")
    child = AccountFacts(2, 1, tax_exempt=True, tax_rate=None, currency="USD")
    orphan = AccountFacts(3, 99, tax_exempt=False, tax_rate=None, currency="USD")
    idle = AccountFacts(4, None, tax_exempt=False, tax_rate=None, currency="USD")

    plan = plan_period(
        APRIL,
        [parent, child, orphan, idle],
        [
            service(10, 1, "30.00", tax_rate="10"),
            service(11, 2, "30.00", billed_through=date(2026, 4, 20)),  # Apr 21-30 left
            service(12, 3, "30.00", billed_through=date(2026, 4, 30)),  # billed already
            service(13, 4, "0.00"),  # owes nothing, but is billed through the period
        ],
        [WaitingDebit(7, 3, Decimal("5.00"), Decimal("0.50"))],
        known_parents={1},
        default_tax_rate=Decimal("0"),
        due_days=14,
    )

    assert [(line.account_id, line.amount, line.tax) for line in plan.lines] == [
        (1, Decimal("30.00"), Decimal("3.00")),
        (2, Decimal("10.00"), Decimal("0.00")),  # exempt
    ]
    assert plan.lines[1].description == "Service 11 x1 2026-04-21 to 2026-04-30"
    assert plan.billed_services == [10, 11, 13]
    assert [
        (i.account_id, i.bill_to_account_id, i.parent_account_id, i.total) for i in plan.invoices
    ] == [
        (1, 1, None, Decimal("33.00")),
        (2, 1, 1, Decimal("10.00")),  # the parent pays
        (3, 3, None, Decimal("5.50")),  # an unknown parent does not
    ]
    assert {i.due_date for i in plan.invoices} == {date(2026, 4, 15)}


def test_an_invoice_draft_nets_the_credits_printed_on_it():
    draft = draft_invoice(
        account_id=5,
        currency="USD",
        invoice_date=date(2026, 4, 10),
        due_days=14,
        debit_totals=[Decimal("30.00"), Decimal("3.00")],
        credit_totals=[Decimal("20.00")],
    )
    assert (draft.total, draft.credit_total, draft.bill_to_account_id) == (
        Decimal("13.00"),
        Decimal("20.00"),
        5,
    )
    assert draft.due_date == date(2026, 4, 24)
