"""Billing's rules through its handlers, called directly on a migrated SQLite database with
no broker: what each handler writes, and the envelopes it stages."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import uuid4

from sqlalchemy import select

from backhaul_contracts import Envelope, Event, decode
from backhaul_contracts.common import Proration, ServiceKind, StatusRef
from backhaul_contracts.events import accounts as account_events
from backhaul_contracts.events import billing as events
from backhaul_contracts.events.outcomes import CommandFailed, CommandSucceeded
from backhaul_kit.testing import Handlers
from billing.adapters.tables import AccountService, BillingAccount, Invoice, Transaction
from billing.domain.rules import PaymentMethod
from billing.service_layer import (
    account_services,
    billing_runs,
    catalogue,
    commands,
    invoices,
    ledger,
    replica,
    transactions,
)

LEAD = StatusRef(id=1, name="Lead", activates_account=False)
ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
INACTIVE = StatusRef(id=3, name="Inactive", activates_account=False)


def typed(envelopes: list[Envelope]) -> list[Event]:
    """The staged envelopes' events, as the consumers on the other side will decode them."""
    return [decode(envelope.model_dump(mode="json"))[1] for envelope in envelopes]


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


async def new_account(handlers: Handlers, account_id: int, status: StatusRef = ACTIVE) -> None:
    created = account_events.AccountCreated(
        account_id=account_id,
        name=f"Account {account_id}",
        status=status,
        billing_day=1,
        created_at=at(date(2026, 4, 1)),
    )
    assert await handlers.handle(replica.on_account_created, created, subject=account_id) == []


async def new_service(handlers: Handlers, price: str = "30.00", name: str = "Fibre") -> int:
    service, emitted = await handlers.call(
        catalogue.create_service,
        catalogue.NewService(
            name=name,
            kind=ServiceKind.DATA,
            price=Decimal(price),
            download_kbps=100_000,
            upload_kbps=20_000,
        ),
    )
    assert [type(e) for e in typed(emitted)] == [events.ServiceDefined]
    return service.id


async def ledger_of(handlers: Handlers, account_id: int) -> list[tuple[str, Decimal, int | None]]:
    async with handlers.uow() as uow:
        rows = await uow.session.scalars(
            select(Transaction).where(Transaction.account_id == account_id).order_by(Transaction.id)
        )
        return [(t.type, t.amount, t.invoice_id) for t in rows]


async def test_adding_and_removing_a_service_debits_then_credits_the_unused_days(
    handlers: Handlers,
):
    await new_account(handlers, 1)
    fibre = await new_service(handlers)

    added, emitted = await handlers.call(
        account_services.add_account_service, 1, fibre, actor="t", day=date(2026, 4, 1)
    )
    [event] = typed(emitted)
    assert isinstance(event, events.AccountServiceAdded)
    assert (event.account_service_id, event.service.service_id, event.price) == (
        added.id,
        fibre,
        Decimal("30.00"),
    )

    _, emitted = await handlers.call(
        account_services.remove_account_service, 1, added.id, actor="t", day=date(2026, 4, 10)
    )
    [event] = typed(emitted)
    assert isinstance(event, events.AccountServiceRemoved)
    assert event.account_service_id == added.id
    # April has 30 days: used through the 10th, 20 days come back.
    assert await ledger_of(handlers, 1) == [
        ("debit", Decimal("30.00"), None),
        ("discount", Decimal("20.00"), None),
    ]
    async with handlers.uow() as uow:
        removed = await uow.session.get_one(AccountService, added.id)
        assert removed.removed_at is not None and removed.billed_through == date(2026, 4, 10)


async def test_entering_an_activating_status_starts_billing_and_leaving_it_stops_it(
    handlers: Handlers,
):
    await new_account(handlers, 2, status=LEAD)
    fibre = await new_service(handlers)
    await handlers.call(
        account_services.add_account_service, 2, fibre, actor="t", day=date(2026, 4, 1)
    )
    assert await ledger_of(handlers, 2) == []  # a lead is not billed

    activated = account_events.AccountStatusChanged(
        account_id=2,
        previous_status=LEAD,
        status=ACTIVE,
        changed_by="staff",
        changed_at=at(date(2026, 4, 16)),
    )
    assert await handlers.handle(replica.on_account_status_changed, activated, subject=2) == []
    assert await ledger_of(handlers, 2) == [("debit", Decimal("15.00"), None)]  # Apr 16-30

    run, emitted = await handlers.call(billing_runs.run_billing, date(2026, 5, 1), actor="t")
    assert (run.accounts_billed, run.invoices_issued) == (1, 1)
    [issued] = typed(emitted)
    assert isinstance(issued, events.InvoiceIssued)
    assert issued.total == Decimal("45.00")  # the waiting 15.00 and all of May
    assert (issued.period_start, issued.period_end) == (date(2026, 5, 1), date(2026, 5, 31))

    stopped = account_events.AccountStatusChanged(
        account_id=2,
        previous_status=ACTIVE,
        status=INACTIVE,
        changed_by="staff",
        changed_at=at(date(2026, 5, 20)),
    )
    assert await handlers.handle(replica.on_account_status_changed, stopped, subject=2) == []
    run, emitted = await handlers.call(billing_runs.run_billing, date(2026, 6, 1), actor="t")
    assert (run.accounts_billed, run.invoices_issued) == (0, 0)
    # Nothing is issued; the run's delinquency check finds May's invoice unpaid and late.
    [late] = typed(emitted)
    assert isinstance(late, events.AccountDelinquencyChanged)
    assert late.delinquent and late.invoice_ids == [issued.invoice_id]
    async with handlers.uow() as uow:
        account = await uow.session.get_one(BillingAccount, 2)
        assert (account.activates, account.status_name) == (False, "Inactive")


async def test_the_final_invoice_of_a_disconnect_credits_the_unused_days_as_a_line(
    handlers: Handlers,
):
    await new_account(handlers, 3)
    fibre = await new_service(handlers)
    await handlers.call(
        account_services.add_account_service, 3, fibre, actor="t", day=date(2026, 4, 1)
    )
    disconnection = uuid4()
    disconnected = account_events.AccountDisconnected(
        account_id=3,
        account_name="Account 3",
        disconnection_id=disconnection,
        disconnected_at=at(date(2026, 4, 10)),
        disconnected_by="staff",
        previous_status=ACTIVE,
        status=INACTIVE,
        proration=Proration.CREDIT_UNUSED,
    )

    emitted = await handlers.handle(replica.on_account_disconnected, disconnected, subject=3)

    [issued] = typed(emitted)
    assert isinstance(issued, events.InvoiceIssued)
    assert issued.final and issued.disconnection_id == disconnection
    assert issued.proration is Proration.CREDIT_UNUSED
    assert (issued.total, issued.credit_total) == (Decimal("10.00"), Decimal("20.00"))
    assert await ledger_of(handlers, 3) == [
        ("debit", Decimal("30.00"), issued.invoice_id),
        ("discount", Decimal("20.00"), issued.invoice_id),  # Apr 11-30, printed on it
    ]
    async with handlers.uow() as uow:
        account = await uow.session.get_one(BillingAccount, 3)
        assert account.disconnected_at is not None and not account.activates
    # The same disconnection again (under another event id) issues nothing more.
    assert await handlers.handle(replica.on_account_disconnected, disconnected, subject=3) == []


async def test_the_schedulers_commands_run_in_the_consumers_unit_of_work_and_are_answered(
    handlers: Handlers,
):
    await new_account(handlers, 4)
    fibre = await new_service(handlers)
    add = events.AddAccountService(account_id=4, service_id=fibre, requested_by="scheduler")

    emitted = await handlers.handle(commands.on_add_service_command, add, subject=4)

    added, answer = typed(emitted)
    assert isinstance(added, events.AccountServiceAdded)
    assert isinstance(answer, CommandSucceeded)
    assert answer.result == {"account_service_id": added.account_service_id, "service_id": fibre}
    assert emitted[1].causation_id is not None

    again = await handlers.handle(commands.on_add_service_command, add, subject=4)
    [refused] = typed(again)
    assert isinstance(refused, CommandFailed)  # one data service at a time
    async with handlers.uow() as uow:
        assert len(await ledger.active_services(uow, 4)) == 1

    remove = events.RemoveAccountService(account_id=4, service_id=fibre, requested_by="scheduler")
    removed, answer = typed(
        await handlers.handle(commands.on_remove_service_command, remove, subject=4)
    )
    assert isinstance(removed, events.AccountServiceRemoved)
    assert isinstance(answer, CommandSucceeded)
    async with handlers.uow() as uow:
        assert await ledger.active_services(uow, 4) == []


async def test_a_payment_pays_the_open_invoice_and_a_void_frees_it_again(handlers: Handlers):
    await new_account(handlers, 5)
    fibre = await new_service(handlers)
    await handlers.call(
        account_services.add_account_service, 5, fibre, actor="t", day=date(2026, 4, 1)
    )
    invoice, emitted = await handlers.call(invoices.create_manual_invoice, 5, actor="t")
    assert [type(e) for e in typed(emitted)] == [events.InvoiceIssued]

    payment, emitted = await handlers.call(
        transactions.receive_payment, 5, Decimal("30.00"), PaymentMethod.CASH, actor="t"
    )
    [received] = typed(emitted)
    assert isinstance(received, events.PaymentReceived)
    assert (received.payment_id, received.amount, received.method) == (
        payment.id,
        Decimal("30.00"),
        "cash",
    )
    async with handlers.uow() as uow:
        paid = await uow.session.get_one(Invoice, invoice.id)
        assert await ledger.remaining_on(uow, paid) == Decimal("0.00")

    _, emitted = await handlers.call(invoices.void_invoice, invoice.id, actor="t")
    [voided] = typed(emitted)
    assert isinstance(voided, events.InvoiceVoided)
    assert (voided.invoice_id, voided.number, voided.voided_by) == (
        invoice.id,
        invoice.number,
        "t",
    )
    assert await ledger_of(handlers, 5) == [
        ("debit", Decimal("30.00"), invoice.id),
        ("payment", Decimal("30.00"), None),
        ("discount", Decimal("30.00"), None),  # the debit's reversal zeroes the invoice
    ]
    async with handlers.uow() as uow:
        void = await uow.session.get_one(Invoice, invoice.id)
        assert void.void and await ledger.remaining_on(uow, void) == Decimal("0.00")
        payment_row = await uow.session.get_one(Transaction, payment.id)
        # The payment came off the void invoice: it is the account's credit again.
        assert await ledger.available_of(uow, payment_row) == Decimal("30.00")
