"""Every money rule, with exact amounts."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backhaul_contracts.common import Proration
from backhaul_kit.errors import InvalidInput
from billing.domain import rules
from billing.domain.money import Money, from_cents, parse_amount, round_money, to_cents
from billing.domain.rules import Period, period_containing, period_starting, prorate

D = Decimal


# -- money ----------------------------------------------------------------------------------


def test_rounding_is_half_up_in_one_place():
    assert round_money(D("0.005")) == D("0.01")
    assert round_money(D("0.004999")) == D("0.00")
    assert round_money(D("-0.005")) == D("-0.01")
    assert round_money(D("2.675")) == D("2.68")  # a float would say 2.67


@pytest.mark.parametrize("text", ["12.345", "abc", "NaN", "Infinity", "1e400000000"])
def test_malformed_amounts_are_refused(text):
    with pytest.raises(InvalidInput):
        parse_amount(text)


def test_amounts_keep_two_decimals_and_round_trip_through_cents():
    assert str(parse_amount("5")) == "5.00"
    assert to_cents(D("49.99")) == 4999
    assert str(from_cents(0)) == "0.00"
    assert str(from_cents(-150)) == "-1.50"
    with pytest.raises(ValueError, match="round it first"):
        to_cents(D("0.001"))


def test_money_refuses_to_mix_currencies():
    assert Money(D("1.10"), "USD") + Money(D("2.20"), "USD") == Money(D("3.30"), "USD")
    with pytest.raises(InvalidInput, match="USD with EUR"):
        _ = Money(D("1"), "USD") + Money(D("1"), "EUR")


# -- periods --------------------------------------------------------------------------------


def test_periods_follow_the_billing_day():
    assert period_containing(date(2026, 3, 10), 15) == Period(date(2026, 2, 15), date(2026, 3, 14))
    assert period_containing(date(2026, 3, 15), 15) == Period(date(2026, 3, 15), date(2026, 4, 14))
    assert period_containing(date(2026, 1, 3), 5) == Period(date(2025, 12, 5), date(2026, 1, 4))
    assert period_starting(date(2024, 2, 1)).days == 29  # leap year
    assert period_starting(date(2025, 2, 1)).days == 28
    assert period_starting(date(2025, 1, 1)).days == 31
    assert period_starting(date(2025, 4, 1)).days == 30
    with pytest.raises(InvalidInput):
        period_containing(date(2026, 1, 1), 31)


# -- proration ------------------------------------------------------------------------------


def test_addition_is_prorated_by_the_days_of_that_month():
    price = D("30.00")
    # 10 of 30 days of April; 10 of 31 days of January; 10 of 29 days of Feb 2024; of 28 in 2025.
    assert rules.addition_charge(
        price, period_starting(date(2026, 4, 1)), date(2026, 4, 21), True
    ) == D("10.00")
    assert rules.addition_charge(
        price, period_starting(date(2026, 1, 1)), date(2026, 1, 22), True
    ) == D("9.68")
    assert rules.addition_charge(
        price, period_starting(date(2024, 2, 1)), date(2024, 2, 20), True
    ) == D("10.34")
    assert rules.addition_charge(
        price, period_starting(date(2025, 2, 1)), date(2025, 2, 19), True
    ) == D("10.71")


def test_a_service_that_does_not_prorate_is_charged_in_full():
    assert rules.addition_charge(
        D("49.99"), period_starting(date(2026, 4, 1)), date(2026, 4, 29), False
    ) == D("49.99")


def test_added_on_the_first_day_is_the_full_price_exactly():
    assert rules.addition_charge(
        D("49.99"), period_starting(date(2026, 4, 1)), date(2026, 4, 1), True
    ) == D("49.99")


def test_unused_credit_counts_days_after_the_last_used_day():
    # Disconnected 2024-02-10 on a Feb 1 cycle: 19 of 29 days unused.
    period = period_starting(date(2024, 2, 1))
    assert rules.unused_credit(D("58.00"), period, date(2024, 2, 10)) == D("38.00")
    # Last day of the period: nothing unused.
    assert rules.unused_credit(D("58.00"), period, date(2024, 2, 29)) == D("0.00")
    # Billing day 15 across the end of a leap February: Feb 15 - Mar 14 2024 is 29 days.
    mid = period_containing(date(2024, 3, 1), 15)
    assert mid.days == 29
    assert rules.unused_credit(D("29.00"), mid, date(2024, 3, 1)) == D("13.00")


@given(
    cents=st.integers(min_value=0, max_value=10_000_000),
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 1)),
    billing_day=st.integers(min_value=1, max_value=28),
    offset=st.integers(min_value=0, max_value=30),
)
def test_used_plus_unused_is_the_price_within_a_cent(cents, start, billing_day, offset):
    price = from_cents(cents)
    period = period_containing(start, billing_day)
    day = min(period.start + timedelta(days=offset), period.end)
    used = prorate(price, period, period.start, day)
    unused = rules.unused_credit(price, period, day)
    assert abs(used + unused - price) <= D("0.01")
    assert D(0) <= unused <= price


def test_final_invoice_proration_inherits_the_global_setting():
    assert rules.effective_proration(Proration.INHERIT, Proration.CREDIT_UNUSED) is (
        Proration.CREDIT_UNUSED
    )
    assert rules.effective_proration(Proration.INHERIT, Proration.NONE) is Proration.NONE
    assert rules.effective_proration(Proration.NONE, Proration.CREDIT_UNUSED) is Proration.NONE
    assert rules.effective_proration(Proration.CREDIT_UNUSED, Proration.NONE) is (
        Proration.CREDIT_UNUSED
    )


# -- taxes ----------------------------------------------------------------------------------


def test_tax_rates_exemption_and_override():
    assert rules.tax_on(D("49.99"), D("8.25")) == D("4.12")
    assert rules.applicable_rate(D("5"), None, D("1"), tax_exempt=False) == D("5")
    assert rules.applicable_rate(D("5"), D("7.5"), D("1"), tax_exempt=False) == D("7.5")
    assert rules.applicable_rate(None, None, D("1"), tax_exempt=False) == D("1")
    assert rules.applicable_rate(D("5"), D("7.5"), D("1"), tax_exempt=True) == D("0")
    with pytest.raises(InvalidInput):
        rules.parse_rate("101")
    with pytest.raises(InvalidInput):
        rules.parse_rate("-1")


# -- balances and invoices ------------------------------------------------------------------


def test_the_banner_nets_available_credits_into_the_total_balance():
    banner = rules.balances(
        invoice_remaining=[D("10.00"), D("5.50")],
        available_credits=D("3.00"),
        uninvoiced_debits=D("20.00"),
        next_recurring_charge=D("49.99"),
    )
    assert banner.balance_due == D("15.50")
    assert banner.total_balance == D("32.50")


def test_invoice_states():
    due = date(2026, 1, 15)
    kwargs = {"due_date": due, "grace_days": 7}
    assert rules.invoice_state(void=True, remaining=D(5), today=due, **kwargs).value == "void"
    assert rules.invoice_state(void=False, remaining=D(0), today=due, **kwargs).value == "paid"
    assert (
        rules.invoice_state(void=False, remaining=D(5), today=date(2026, 1, 22), **kwargs).value
        == "open"
    )
    assert (
        rules.invoice_state(void=False, remaining=D(5), today=date(2026, 1, 23), **kwargs).value
        == "delinquent"
    )


def test_months_covered():
    assert rules.months_covered(date(2026, 1, 1), date(2026, 1, 31)) == 1
    assert rules.months_covered(date(2026, 1, 15), date(2026, 2, 14)) == 1
    assert rules.months_covered(date(2026, 1, 1), date(2026, 3, 31)) == 3
    assert rules.months_covered(None, None) == 0


# -- credits --------------------------------------------------------------------------------


def test_credits_pay_the_oldest_invoices_first_and_never_overpay():
    allocations = rules.allocate_credits(
        credits=[(1, D("30.00")), (2, D("25.00"))],
        invoices=[(10, D("40.00")), (11, D("10.00"))],
    )
    assert [(a.credit_id, a.invoice_id, a.amount) for a in allocations] == [
        (1, 10, D("30.00")),
        (2, 10, D("10.00")),
        (2, 11, D("10.00")),
    ]  # 5.00 of credit 2 stays available


def test_applying_credits_stops_at_the_amount_asked():
    allocations = rules.allocate_credits([(1, D("30.00"))], [(10, D("40.00"))], limit=D("12.34"))
    assert [(a.invoice_id, a.amount) for a in allocations] == [(10, D("12.34"))]
    assert rules.allocate_credits([(1, D("0.00"))], [(10, D("5.00"))]) == []
    assert rules.allocate_credits([(1, D("5.00"))], [(10, D("0.00"))]) == []


@given(
    credits=st.lists(st.integers(min_value=0, max_value=100_000), max_size=6),
    invoices=st.lists(st.integers(min_value=0, max_value=100_000), max_size=6),
)
def test_allocation_conserves_money(credits, invoices):
    credit_list = [(i, from_cents(c)) for i, c in enumerate(credits)]
    invoice_list = [(100 + i, from_cents(r)) for i, r in enumerate(invoices)]
    allocations = rules.allocate_credits(credit_list, invoice_list)
    applied = sum((a.amount for a in allocations), D(0))
    assert applied == min(
        sum((c for _, c in credit_list), D(0)), sum((r for _, r in invoice_list), D(0))
    )
    for invoice_id, remaining in invoice_list:
        assert sum((a.amount for a in allocations if a.invoice_id == invoice_id), D(0)) <= remaining
    for credit_id, left in credit_list:
        assert sum((a.amount for a in allocations if a.credit_id == credit_id), D(0)) <= left


def test_the_daily_run_wakes_at_the_next_hour():
    from datetime import UTC, datetime

    from billing.entrypoints.timers import next_run

    assert next_run(datetime(2026, 1, 1, 1, 30, tzinfo=UTC), 2) == datetime(
        2026, 1, 1, 2, tzinfo=UTC
    )
    assert next_run(datetime(2026, 1, 1, 2, 0, tzinfo=UTC), 2) == datetime(
        2026, 1, 2, 2, tzinfo=UTC
    )


def test_adding_months_to_a_late_day_lands_on_the_shorter_months_last_day():
    from datetime import date

    from billing.domain.rules import add_months

    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2023, 1, 31), 1) == date(2023, 2, 28)
    assert add_months(date(2024, 3, 31), -1) == date(2024, 2, 29)
    assert add_months(date(2024, 12, 15), 1) == date(2025, 1, 15)
