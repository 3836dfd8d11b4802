"""Invoices (payments, void, freeze, credits, delete), billing runs, parents, taxes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backhaul_contracts import Envelope, Event
from backhaul_contracts.common import StatusRef
from backhaul_contracts.events.accounts import AccountCreated, AccountStatusChanged
from backhaul_contracts.topics import BILLING_EVENTS
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.testing import read_events

pytestmark = pytest.mark.integration

LEAD = StatusRef(id=1, name="Lead", activates_account=False)
ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
INTERNET = {
    "name": "Internet 50",
    "kind": "data",
    "price": "29.00",
    "download_kbps": 50_000,
    "upload_kbps": 10_000,
}
TV = {"name": "TV", "kind": "recurring", "price": "10.00"}


async def feed(runtime, event: Event, account_id: int) -> None:
    envelope = Envelope.wrap(event, producer="accounts", subject=account_id)
    record = Record(topic="accounts.events.v1", value=envelope.to_bytes())
    assert await runtime.consumer.process(record) is Outcome.HANDLED


async def account(runtime, account_id: int, status=ACTIVE, **extra) -> None:
    await feed(
        runtime,
        AccountCreated(
            account_id=account_id,
            name=f"A{account_id}",
            status=status,
            created_at=datetime.now(UTC),
            **extra,
        ),
        account_id,
    )


async def activate(runtime, account_id: int, on: str, parent: int | None = None) -> None:
    await feed(
        runtime,
        AccountStatusChanged(
            account_id=account_id,
            previous_status=LEAD,
            status=ACTIVE,
            changed_by="staff",
            parent_account_id=parent,
            changed_at=datetime.fromisoformat(on).replace(tzinfo=UTC),
        ),
        account_id,
    )


async def post(client, url, body=None, status=201):
    response = await client.post(url, json=body)
    assert response.status_code == status, response.text
    return response.json()


async def charged_invoice(runtime, client, account_id: int) -> dict:
    service = await post(client, "/services", {**TV, "name": f"TV {account_id}"})
    await account(runtime, account_id)
    await post(
        client, f"/accounts/{account_id}/services", {"service_id": service["id"], "prorates": False}
    )
    return await post(client, f"/accounts/{account_id}/invoices")


async def test_leap_year_activation_is_prorated_and_the_run_bills_the_next_period(
    service, settings, kafka_bootstrap
):
    runtime, client = service
    internet = await post(client, "/services", INTERNET)
    await account(runtime, 60, status=LEAD, billing_day=1)
    await post(client, "/accounts/60/services", {"service_id": internet["id"]})
    assert (await client.get("/accounts/60/transactions")).json() == []

    await activate(runtime, 60, "2024-02-10T09:00:00")  # 20 of February 2024's 29 days
    [prorated] = (await client.get("/accounts/60/transactions")).json()
    assert prorated["amount"] == "20.00"
    assert (prorated["period_start"], prorated["period_end"]) == ("2024-02-10", "2024-02-29")

    run = await post(client, "/billing-runs", {"date": "2024-03-01"})
    assert (run["accounts_billed"], run["invoices_issued"]) == (1, 1)
    [invoice] = (await client.get("/accounts/60/invoices")).json()
    assert invoice["total"] == "49.00"  # February's 20.00 and March's 29.00
    assert invoice["number"] == f"INV-{invoice['id']:06d}"
    assert (invoice["period_start"], invoice["period_end"]) == ("2024-03-01", "2024-03-31")
    assert invoice["months"] == 1 and invoice["due_date"] == "2024-03-15"

    rerun = await post(client, "/billing-runs", {"date": "2024-03-01"})
    assert (rerun["accounts_billed"], rerun["accounts_skipped"]) == (0, 1)
    assert len((await client.get("/accounts/60/invoices")).json()) == 1

    # Past due plus the 7 grace days: delinquent, announced; paid: no longer.
    check = await post(client, "/delinquency-checks", {"date": "2024-03-23"}, status=200)
    assert check["accounts_changed"] == 1
    assert (await client.get("/accounts/60/balance")).json()["delinquent"] is True
    await post(
        client,
        "/accounts/60/payments",
        {"amount": "49.00", "method": "check", "reference": "chq 1001"},
    )
    balance = (await client.get("/accounts/60/balance")).json()
    assert balance["delinquent"] is False and balance["total_balance"] == "0.00"
    # ServiceDefined first, then the account's own events
    events = await read_events(kafka_bootstrap, settings.topic(BILLING_EVENTS), count=5)
    assert [
        e.payload["delinquent"] for e in events if e.event_type == "AccountDelinquencyChanged"
    ] == [True, False]


async def test_run_skips_non_activating_accounts_and_other_billing_days(local_service):
    runtime, client = local_service
    tv = await post(client, "/services", TV)
    await account(runtime, 61, status=LEAD, billing_day=1)
    await account(runtime, 62, billing_day=2)
    for account_id in (61, 62):
        await post(client, f"/accounts/{account_id}/services", {"service_id": tv["id"]})
    run = await post(client, "/billing-runs", {"date": "2030-01-01"})
    assert run["accounts_billed"] == 0
    assert (await client.get("/accounts/61/invoices")).json() == []


async def test_parent_pays_the_childs_recurring_invoice(local_service):
    runtime, client = local_service
    tv = await post(client, "/services", TV)
    await account(runtime, 70, status=LEAD, billing_day=1)
    await account(runtime, 71, status=LEAD, billing_day=1, parent_account_id=70)
    for account_id, parent in ((70, None), (71, 70)):
        await post(client, f"/accounts/{account_id}/services", {"service_id": tv["id"]})
        await activate(runtime, account_id, "2030-01-01T00:00:00", parent)

    await post(client, "/billing-runs", {"date": "2030-02-01"})

    [parent_invoice] = (await client.get("/accounts/70/invoices")).json()
    [child_invoice] = (await client.get("/accounts/71/invoices")).json()
    assert child_invoice["bill_to_account_id"] == 70
    assert child_invoice["parent_invoice_id"] == parent_invoice["id"]
    assert [c["id"] for c in parent_invoice["child_invoices"]] == [child_invoice["id"]]
    assert parent_invoice["children_remaining"] == "20.00"
    assert (await client.get("/accounts/70/balance")).json()["balance_due"] == "40.00"
    assert (await client.get("/accounts/71/balance")).json()["balance_due"] == "0.00"
    assert (await client.get("/accounts/70")).json()["child_account_ids"] == [71]

    await post(client, "/accounts/70/payments", {"amount": "40.00", "method": "wire"})
    assert (await client.get(f"/invoices/{child_invoice['id']}")).json()["state"] == "paid"


async def test_void_reverses_debits_and_frees_payments(local_service):
    runtime, client = local_service
    invoice = await charged_invoice(runtime, client, 80)
    await post(client, "/accounts/80/payments", {"amount": "4.00", "method": "cash"})
    assert (await client.get(f"/invoices/{invoice['id']}")).json()["remaining"] == "6.00"

    voided = await post(client, f"/invoices/{invoice['id']}/void", status=200)

    assert voided["void"] is True and voided["state"] == "void" and voided["remaining"] == "0.00"
    types = [t["type"] for t in (await client.get("/accounts/80/transactions")).json()]
    assert types == ["debit", "payment", "discount"]
    balance = (await client.get("/accounts/80/balance")).json()
    assert balance["available_credits"] == "4.00" and balance["total_balance"] == "-4.00"

    again = await client.post(f"/invoices/{invoice['id']}/void")
    assert again.status_code == 409 and "void" in again.json()["message"]
    pay_void = await client.post(
        "/accounts/80/payments",
        json={"amount": "1.00", "method": "cash", "invoice_id": invoice["id"]},
    )
    assert pay_void.status_code == 409 and "void" in pay_void.json()["message"]


async def test_frozen_invoice_gets_no_payments_and_cannot_change(local_service):
    runtime, client = local_service
    invoice = await charged_invoice(runtime, client, 81)
    frozen = (await client.patch(f"/invoices/{invoice['id']}", json={"frozen": True})).json()
    assert frozen["frozen"] is True

    await post(client, "/accounts/81/payments", {"amount": "10.00", "method": "cash"})
    assert (await client.get(f"/invoices/{invoice['id']}")).json()["paid"] == "0.00"
    assert (await client.get("/accounts/81/balance")).json()["available_credits"] == "10.00"
    for refused in (
        await client.post(f"/invoices/{invoice['id']}/void"),
        await client.post(f"/invoices/{invoice['id']}/apply-credits"),
        await client.patch(f"/invoices/{invoice['id']}", json={"message": "hello"}),
        await client.patch(
            f"/transactions/{invoice['debits'][0]['id']}", json={"description": "TV, March"}
        ),
    ):
        assert refused.status_code == 409 and "frozen" in refused.json()["message"]

    thawed = (await client.patch(f"/invoices/{invoice['id']}", json={"frozen": False})).json()
    assert thawed["paid"] == "10.00" and thawed["state"] == "paid"
    edited = await client.patch(
        f"/transactions/{invoice['debits'][0]['id']}", json={"description": "TV, March"}
    )
    assert edited.status_code == 200 and edited.json()["description"] == "TV, March"


async def test_apply_credits_reverse_debit_and_delete(local_service):
    runtime, client = local_service
    invoice = await charged_invoice(runtime, client, 82)
    await client.patch(f"/invoices/{invoice['id']}", json={"frozen": True})
    await post(client, "/accounts/82/discounts", {"amount": "3.00", "description": "sorry"})
    await client.patch(f"/invoices/{invoice['id']}", json={"frozen": False})
    # Unfreezing applied the discount; pay partly, then reverse the debit.
    assert (await client.get(f"/invoices/{invoice['id']}")).json()["remaining"] == "7.00"
    [debit] = invoice["debits"]
    reversal = await post(client, f"/transactions/{debit['id']}/reverse", {"reason": "error"})
    assert reversal["type"] == "discount" and reversal["reverses_id"] == debit["id"]
    after = (await client.get(f"/invoices/{invoice['id']}")).json()
    assert after["remaining"] == "0.00"
    balance = (await client.get("/accounts/82/balance")).json()
    assert balance["available_credits"] == "3.00" and balance["total_balance"] == "-3.00"
    twice = await client.post(f"/transactions/{debit['id']}/reverse")
    assert twice.status_code == 409

    second = await charged_invoice(runtime, client, 83)
    await client.put("/settings", json={"accounting_period_close": "2999-01-01"})
    closed = await client.delete(f"/invoices/{second['id']}")
    assert closed.status_code == 409 and "accounting period close" in closed.json()["message"]
    await client.put("/settings", json={"accounting_period_close": None})
    assert (await client.delete(f"/invoices/{second['id']}")).status_code == 204
    balance = (await client.get("/accounts/83/balance")).json()
    assert balance["uninvoiced_debits"] == "10.00" and balance["balance_due"] == "0.00"


async def test_payment_reversal_reopens_the_invoice(local_service):
    runtime, client = local_service
    invoice = await charged_invoice(runtime, client, 84)
    payment = await post(
        client,
        "/accounts/84/payments",
        {"amount": "10.00", "method": "credit_card", "token": "tok_visa_4242"},
    )
    assert (await client.get(f"/invoices/{invoice['id']}")).json()["state"] == "paid"
    reversal = await post(client, f"/transactions/{payment['id']}/reverse")
    assert reversal["type"] == "payment_reversal"
    assert (await client.get(f"/invoices/{invoice['id']}")).json()["remaining"] == "10.00"
    assert (await client.get("/accounts/84/balance")).json()["total_balance"] == "10.00"


async def test_card_numbers_are_refused_and_bad_amounts_change_nothing(local_service):
    runtime, client = local_service
    await account(runtime, 85)
    card = await client.post(
        "/accounts/85/payments",
        json={"amount": "10.00", "method": "credit_card", "token": "4111 1111 1111 1111"},
    )
    assert card.status_code == 422 and "never the number" in card.json()["message"]
    missing = await client.post(
        "/accounts/85/payments", json={"amount": "10.00", "method": "bank_account"}
    )
    assert missing.status_code == 422 and "token" in missing.json()["message"]
    for amount in ("-5.00", "0", "1.001", "ten"):
        bad = await client.post("/accounts/85/payments", json={"amount": amount, "method": "cash"})
        assert bad.status_code == 422, amount
    assert (await client.get("/accounts/85/transactions")).json() == []


async def test_taxes_packages_and_next_recurring_charge(local_service):
    runtime, client = local_service
    taxed = await post(client, "/services", {**TV, "name": "Taxed TV", "tax_rate": "8.25"})
    phone = await post(
        client, "/services", {"name": "Phone", "kind": "recurring", "price": "20.00"}
    )
    package = await post(
        client,
        "/packages",
        {
            "name": "Bundle",
            "services": [
                {"service_id": taxed["id"]},
                {"service_id": phone["id"], "quantity": 2, "price_override": "15.00"},
            ],
        },
    )
    await account(runtime, 86, status=LEAD)
    added = await post(client, "/accounts/86/packages", {"package_id": package["id"]})
    assert [(a["service"]["name"], a["price"], a["quantity"]) for a in added] == [
        ("Taxed TV", "10.00", 1),
        ("Phone", "15.00", 2),
    ]
    # 10.00 + 0.83 tax, and 2 x 15.00 untaxed.
    assert (await client.get("/accounts/86/balance")).json()["next_recurring_charge"] == "40.83"

    exempt = await client.put("/accounts/86/billing-configuration", json={"tax_exempt": True})
    assert exempt.json()["tax_exempt"] is True
    assert (await client.get("/accounts/86/balance")).json()["next_recurring_charge"] == "40.00"
    await client.put(
        "/accounts/86/billing-configuration", json={"tax_exempt": False, "tax_rate": "10"}
    )
    debit = await post(client, "/accounts/86/debits", {"service_id": taxed["id"]})
    assert (debit["amount"], debit["tax"], debit["total"]) == ("10.00", "1.00", "11.00")


async def test_vacation_swap_charges_each_data_service_for_its_days(local_service):
    """Seed 002: leave on Apr 10, back on Apr 25 (April has 30 days, billing day 1)."""
    from datetime import date

    from billing.service_layer import account_services, queries

    runtime, client = local_service
    fibre = await post(client, "/services", {**INTERNET, "name": "Fibre", "price": "30.00"})
    vacation = await post(
        client,
        "/services",
        {
            "name": "Vacation 1M",
            "kind": "data",
            "price": "6.00",
            "download_kbps": 1000,
            "upload_kbps": 1000,
        },
    )
    await account(runtime, 90, billing_day=1)
    uow = runtime.uow()
    first = await account_services.add_account_service(
        uow, 90, fibre["id"], actor="t", day=date(2026, 4, 1)
    )
    await account_services.remove_account_service(
        uow, 90, first.id, actor="t", day=date(2026, 4, 10)
    )
    away = await account_services.add_account_service(
        uow, 90, vacation["id"], actor="t", day=date(2026, 4, 10)
    )
    await account_services.remove_account_service(
        uow, 90, away.id, actor="t", day=date(2026, 4, 25)
    )
    await account_services.add_account_service(
        uow, 90, fibre["id"], actor="t", day=date(2026, 4, 25)
    )

    ledger = [
        (v.transaction.type, str(v.transaction.amount))
        for v in await queries.list_transactions(uow, 90)
    ]
    assert ledger == [
        ("debit", "30.00"),  # Fibre, all of April
        ("discount", "20.00"),  # Fibre unused Apr 11-30: 20 of 30 days
        ("debit", "4.20"),  # Vacation Apr 10-30: 21 days
        ("discount", "1.00"),  # Vacation unused Apr 26-30: 5 days
        ("debit", "6.00"),  # Fibre again Apr 25-30: 6 days
    ]
    assert (await client.get("/accounts/90/balance")).json()["total_balance"] == "19.20"


async def test_a_child_invoice_can_be_unlinked_and_linked_again(local_service):
    runtime, client = local_service
    tv = await post(client, "/services", {**TV, "name": "Kids TV"})
    await account(runtime, 91, status=LEAD, billing_day=1)
    await account(runtime, 92, status=LEAD, billing_day=1, parent_account_id=91)
    for account_id, parent in ((91, None), (92, 91)):
        await post(client, f"/accounts/{account_id}/services", {"service_id": tv["id"]})
        await activate(runtime, account_id, "2030-01-01T00:00:00", parent)
    await post(client, "/billing-runs", {"date": "2030-01-01"})
    [parent_invoice] = (await client.get("/accounts/91/invoices")).json()
    [child_invoice] = (await client.get("/accounts/92/invoices")).json()

    unlinked = await client.delete(
        f"/invoices/{parent_invoice['id']}/child-invoices/{child_invoice['id']}"
    )
    assert unlinked.status_code == 200 and unlinked.json()["child_invoices"] == []
    assert (await client.get("/accounts/92/balance")).json()["balance_due"] == "10.00"
    assert (await client.get("/accounts/91/balance")).json()["balance_due"] == "10.00"

    relinked = await post(
        client,
        f"/invoices/{parent_invoice['id']}/child-invoices",
        {"child_invoice_id": child_invoice["id"]},
        status=200,
    )
    assert [c["id"] for c in relinked["child_invoices"]] == [child_invoice["id"]]
    await post(client, "/accounts/91/payments", {"amount": "15.00", "method": "cash"})
    stranded = await client.delete(
        f"/invoices/{parent_invoice['id']}/child-invoices/{child_invoice['id']}"
    )
    assert stranded.status_code == 409 and "credits applied" in stranded.json()["message"]
    wrong = await client.post(
        f"/invoices/{child_invoice['id']}/child-invoices",
        json={"child_invoice_id": parent_invoice["id"]},
    )
    assert wrong.status_code == 409 and "not a child" in wrong.json()["message"]


async def test_voiding_an_invoice_whose_debit_was_reversed_earlier_keeps_balances_whole(
    local_service,
):
    """Found by the balances property: a debit reversed after its invoice was paid leaves
    its reversal as credit, which pays the next invoice. Voiding the first invoice then
    brings that reversal back to it and lets the freed payment pay the second, so the
    credit is never counted twice."""
    runtime, client = local_service
    install = await post(
        client, "/services", {"name": "Setup 86", "kind": "one_time", "price": "5.00"}
    )
    await account(runtime, 86)
    await post(client, "/accounts/86/discounts", {"amount": "5.00", "description": "promo"})
    first_debit = await post(client, "/accounts/86/debits", {"service_id": install["id"]})
    first = await post(client, "/accounts/86/invoices")
    assert first["state"] == "paid"
    await post(client, "/accounts/86/debits", {"service_id": install["id"]})
    await post(client, f"/transactions/{first_debit['id']}/reverse")
    second = await post(client, "/accounts/86/invoices")
    assert second["state"] == "paid"  # by the reversal

    await post(client, f"/invoices/{first['id']}/void", status=200)

    assert (await client.get(f"/invoices/{second['id']}")).json()["state"] == "paid"
    balance = (await client.get("/accounts/86/balance")).json()
    ledger = (await client.get("/accounts/86/transactions")).json()
    assert balance["total_balance"] == ledger[-1]["balance"] == "0.00"
    assert balance["available_credits"] == "0.00"


async def test_void_refuses_to_take_a_reversal_back_off_a_frozen_invoice(local_service):
    runtime, client = local_service
    install = await post(
        client, "/services", {"name": "Setup 87", "kind": "one_time", "price": "5.00"}
    )
    await account(runtime, 87)
    await post(client, "/accounts/87/payments", {"amount": "5.00", "method": "cash"})
    first_debit = await post(client, "/accounts/87/debits", {"service_id": install["id"]})
    first = await post(client, "/accounts/87/invoices")
    await post(client, "/accounts/87/debits", {"service_id": install["id"]})
    await post(client, f"/transactions/{first_debit['id']}/reverse")
    second = await post(client, "/accounts/87/invoices")
    await client.patch(f"/invoices/{second['id']}", json={"frozen": True})

    refused = await client.post(f"/invoices/{first['id']}/void")

    assert refused.status_code == 409 and "frozen" in refused.json()["message"]
    assert (await client.get(f"/invoices/{first['id']}")).json()["void"] is False
    assert (await client.get(f"/invoices/{second['id']}")).json()["paid"] == "5.00"
