"""Property: whatever happens to an account, its balances reconcile.

Hypothesis drives random sequences of charges, discounts, payments, invoices, reversals,
voids, freezes and credit applications through the real handlers on a real (SQLite)
database. After every sequence: the sum of debits minus credits (the ledger's running
balance) equals the total balance, and no invoice is paid beyond its total.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backhaul_contracts import Envelope
from backhaul_contracts.common import ServiceKind, StatusRef
from backhaul_contracts.events.accounts import AccountCreated
from backhaul_kit.errors import DomainError
from backhaul_kit.messaging.consumer import Record
from billing.bootstrap import bootstrap
from billing.config import BillingSettings
from billing.domain.money import from_cents
from billing.domain.rules import PaymentMethod
from billing.service_layer import ledger, queries
from billing.service_layer.catalogue import NewService, create_service
from billing.service_layer.invoices import (
    apply_credits,
    create_manual_invoice,
    edit_invoice,
    void_invoice,
)
from billing.service_layer.transactions import (
    add_discount,
    add_one_time_debit,
    receive_payment,
    reverse_transaction,
)

pytestmark = pytest.mark.integration

amounts = st.integers(min_value=1, max_value=50_000).map(from_cents)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("charge"), amounts, st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("discount"), amounts),
        st.tuples(st.just("pay"), amounts),
        st.tuples(st.just("invoice")),
        st.tuples(st.just("reverse"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("void"), st.integers(min_value=0, max_value=5)),
        st.tuples(st.just("freeze"), st.integers(min_value=0, max_value=5), st.booleans()),
        st.tuples(st.just("apply"), st.integers(min_value=0, max_value=5)),
    ),
    min_size=1,
    max_size=14,
)


async def _scenario(runtime, account_id: int, service_id: int, ops) -> None:
    uow = runtime.uow()
    created = AccountCreated(
        account_id=account_id,
        name="prop",
        status=StatusRef(id=2, name="Active", activates_account=True),
        created_at=datetime.now(UTC),
    )
    await runtime.consumer.process(
        Record(
            topic="accounts.events.v1",
            value=Envelope.wrap(created, producer="t", subject=account_id).to_bytes(),
        )
    )
    for op in ops:
        try:
            await _apply(uow, account_id, service_id, op)
        except DomainError:
            pass  # refused as a whole (e.g. voiding a frozen invoice): nothing half-applied
    await _check(uow, account_id)


async def _apply(uow, account_id: int, service_id: int, op) -> None:
    kind = op[0]
    if kind == "charge":
        await add_one_time_debit(
            uow, account_id, service_id, quantity=op[2], amount=op[1], actor="p"
        )
    elif kind == "discount":
        await add_discount(uow, account_id, op[1], "goodwill", actor="p")
    elif kind == "pay":
        await receive_payment(uow, account_id, op[1], PaymentMethod.CASH, actor="p")
    elif kind == "invoice":
        await create_manual_invoice(uow, account_id, actor="p")
    elif kind == "reverse":
        views = await queries.list_transactions(uow, account_id)
        if views:
            target = views[op[1] % len(views)].transaction
            await reverse_transaction(uow, target.id, actor="p")
    else:
        invoices = await queries.list_invoices(uow, account_id)
        if not invoices:
            return
        invoice = invoices[op[1] % len(invoices)].invoice
        if kind == "void":
            await void_invoice(uow, invoice.id, actor="p")
        elif kind == "freeze":
            await edit_invoice(uow, invoice.id, frozen=op[2], message=None, message_given=False)
        else:
            await apply_credits(uow, invoice.id, None, actor="p")


async def _check(uow, account_id: int) -> None:
    views = await queries.list_transactions(uow, account_id)
    ledger_balance = views[-1].balance if views else Decimal("0.00")
    _, banner = await queries.account_balances(uow, account_id)
    assert banner.total_balance == ledger_balance
    assert banner.available_credits >= 0
    assert banner.uninvoiced_debits >= 0
    for view in await queries.list_invoices(uow, account_id):
        assert view.paid <= view.invoice.total
        assert view.remaining >= 0
        if view.invoice.void:
            assert view.remaining == 0
    async with uow:
        for view in views:
            credit = view.transaction
            if credit.type in ("payment", "discount"):
                assert await ledger.available_of(uow, credit) >= 0


def test_balances_always_reconcile(tmp_path):
    runner = asyncio.Runner()
    config = BillingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/billing.db")
    runtime = bootstrap(config)
    runtime.migrate()

    async def catalogue() -> int:
        service = await create_service(
            runtime.uow(),
            NewService(name="Install", kind=ServiceKind.ONE_TIME, price=Decimal("10.00")),
        )
        return service.id

    service_id = runner.run(catalogue())
    account_ids = itertools.count(1)

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(ops=operations)
    def reconcile(ops) -> None:
        runner.run(_scenario(runtime, next(account_ids), service_id, ops))

    try:
        reconcile()
    finally:
        runner.run(runtime.db.dispose())
        runner.close()
