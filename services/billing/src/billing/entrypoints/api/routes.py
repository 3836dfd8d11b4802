"""The billing HTTP API. Thin: parse, call one handler, shape the answer."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from fastapi import APIRouter, Response

from backhaul_contracts.common import Proration
from backhaul_kit.deps import ActorDep, UnitOfWorkDep
from backhaul_kit.errors import InvalidInput
from billing.adapters.tables import AccountService, Transaction
from billing.domain import rules
from billing.entrypoints.api.schemas import (
    AccountPackageIn,
    AccountServiceIn,
    AccountServiceOut,
    ApplyCreditsIn,
    BalanceOut,
    BillingAccountOut,
    BillingConfigurationIn,
    BillingRunIn,
    BillingRunOut,
    ChildInvoiceOut,
    DebitEditIn,
    DebitIn,
    DelinquencyCheckIn,
    DelinquencyCheckOut,
    DiscountIn,
    InvoiceEditIn,
    InvoiceOut,
    LinkInvoiceIn,
    PackageIn,
    PackageOut,
    PaymentIn,
    ReverseIn,
    ServiceIn,
    ServiceOut,
    SettingsIn,
    SettingsOut,
    TransactionOut,
)
from billing.service_layer import (
    account_services,
    billing_runs,
    catalogue,
    invoices,
    queries,
    settings,
    transactions,
)

router = APIRouter()


def _transaction_out(transaction: Transaction, balance: Decimal | None = None) -> TransactionOut:
    return TransactionOut.model_validate(
        {
            **{
                c: getattr(transaction, c)
                for c in TransactionOut.model_fields
                if c not in ("total", "balance")
            },
            "total": transaction.amount + transaction.tax,
            "balance": balance,
        }
    )


def _invoice_out(view: queries.InvoiceView) -> InvoiceOut:
    invoice = view.invoice
    lines = [_transaction_out(t) for t in view.lines]
    return InvoiceOut(
        id=invoice.id,
        number=invoice.number,
        account_id=invoice.account_id,
        bill_to_account_id=invoice.bill_to_account_id,
        parent_invoice_id=invoice.parent_invoice_id,
        final=invoice.final,
        manual=invoice.manual,
        frozen=invoice.frozen,
        void=invoice.void,
        delinquent=invoice.delinquent,
        state=view.state.value,
        disconnection_id=invoice.disconnection_id,
        currency=invoice.currency,
        total=invoice.total,
        paid=view.paid,
        remaining=view.remaining,
        issued_at=invoice.issued_at,
        invoice_date=invoice.invoice_date,
        due_date=invoice.due_date,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        months=view.months,
        message=invoice.message,
        voided_at=invoice.voided_at,
        voided_by=invoice.voided_by,
        lines=lines,
        debits=[line for line in lines if line.type == rules.TransactionType.DEBIT.value],
        child_invoices=[
            ChildInvoiceOut(
                id=c.invoice.id,
                number=c.invoice.number,
                account_id=c.invoice.account_id,
                invoice_date=c.invoice.invoice_date,
                total=c.invoice.total,
                remaining=c.remaining,
            )
            for c in view.child_invoices
        ],
        children_remaining=view.children_remaining,
    )


def _account_service_out(account_service: AccountService) -> AccountServiceOut:
    return AccountServiceOut.model_validate(account_service)


# -- catalogue ----------------------------------------------------------------------------


@router.post("/services", response_model=ServiceOut, status_code=201, tags=["catalogue"])
async def create_service(body: ServiceIn, uow: UnitOfWorkDep, response: Response) -> ServiceOut:
    """Add a catalogue service: recurring, data (with speeds), one-time or adjustment."""
    service = await catalogue.create_service(uow, catalogue.NewService(**body.model_dump()))
    response.headers["Location"] = f"/services/{service.id}"
    return ServiceOut.model_validate(service)


@router.get("/services", response_model=list[ServiceOut], tags=["catalogue"])
async def list_services(uow: UnitOfWorkDep) -> list[ServiceOut]:
    """The service catalogue."""
    return [ServiceOut.model_validate(s) for s in await queries.list_services(uow)]


@router.get("/services/{service_id}", response_model=ServiceOut, tags=["catalogue"])
async def get_service(service_id: int, uow: UnitOfWorkDep) -> ServiceOut:
    """One catalogue service."""
    return ServiceOut.model_validate(await queries.get_service(uow, service_id))


@router.post("/packages", response_model=PackageOut, status_code=201, tags=["catalogue"])
async def create_package(body: PackageIn, uow: UnitOfWorkDep) -> PackageOut:
    """Add a package: services (with quantity and optional price) added together."""
    items = [catalogue.NewPackageItem(**i.model_dump()) for i in body.services]
    return PackageOut.model_validate(await catalogue.create_package(uow, body.name, items))


@router.get("/packages", response_model=list[PackageOut], tags=["catalogue"])
async def list_packages(uow: UnitOfWorkDep) -> list[PackageOut]:
    """Every package with its services."""
    return [PackageOut.model_validate(p) for p in await queries.list_packages(uow)]


# -- accounts -----------------------------------------------------------------------------


@router.get("/accounts/{account_id}", response_model=BillingAccountOut, tags=["accounts"])
async def get_account(account_id: int, uow: UnitOfWorkDep) -> BillingAccountOut:
    """Billing's view of an account: its status, parent, children and billing configuration."""
    account, children = await queries.get_account(uow, account_id)
    return BillingAccountOut(
        id=account.id,
        name=account.name,
        status_id=account.status_id,
        status_name=account.status_name,
        activates=account.activates,
        parent_account_id=account.parent_id,
        child_account_ids=children,
        billing_day=account.billing_day,
        disconnected_at=account.disconnected_at,
        delinquent=account.delinquent,
        tax_exempt=account.tax_exempt,
        tax_rate=account.tax_rate,
        currency=account.currency,
    )


@router.put(
    "/accounts/{account_id}/billing-configuration",
    response_model=BillingAccountOut,
    tags=["accounts"],
)
async def configure_account(
    account_id: int, body: BillingConfigurationIn, uow: UnitOfWorkDep
) -> BillingAccountOut:
    """Tax exemption and a tax-rate override for the account (null clears the override)."""
    await settings.configure_account(
        uow,
        account_id,
        tax_exempt=body.tax_exempt,
        tax_rate=body.tax_rate,
        clear_tax_rate="tax_rate" in body.model_fields_set and body.tax_rate is None,
    )
    return await get_account(account_id, uow)


@router.post(
    "/accounts/{account_id}/services",
    response_model=AccountServiceOut,
    status_code=201,
    tags=["account services"],
)
async def add_account_service(
    account_id: int, body: AccountServiceIn, uow: UnitOfWorkDep, actor: ActorDep
) -> AccountServiceOut:
    """Add a recurring or data service; its charge for the current period is debited
    (prorated from today) when the account's status activates it. A second data service is a
    409: remove the existing one first."""
    added = await account_services.add_account_service(
        uow,
        account_id,
        body.service_id,
        quantity=body.quantity,
        price_override=body.price_override,
        prorates=body.prorates,
        actor=actor,
    )
    return _account_service_out(added)


@router.post(
    "/accounts/{account_id}/packages",
    response_model=list[AccountServiceOut],
    status_code=201,
    tags=["account services"],
)
async def add_package(
    account_id: int, body: AccountPackageIn, uow: UnitOfWorkDep, actor: ActorDep
) -> list[AccountServiceOut]:
    """Add every service of a package to the account (all or none)."""
    added = await account_services.add_package(uow, account_id, body.package_id, actor=actor)
    return [_account_service_out(a) for a in added]


@router.get(
    "/accounts/{account_id}/services",
    response_model=list[AccountServiceOut],
    tags=["account services"],
)
async def list_account_services(
    account_id: int, uow: UnitOfWorkDep, include_removed: bool = False
) -> list[AccountServiceOut]:
    """The account's services (removed ones too if asked)."""
    rows = await queries.list_account_services(uow, account_id, include_removed=include_removed)
    return [_account_service_out(a) for a in rows]


@router.delete(
    "/accounts/{account_id}/services/{account_service_id}",
    response_model=AccountServiceOut,
    tags=["account services"],
)
async def remove_account_service(
    account_id: int, account_service_id: int, uow: UnitOfWorkDep, actor: ActorDep
) -> AccountServiceOut:
    """Remove a service from the account; a prorating one is credited its unused days."""
    removed = await account_services.remove_account_service(
        uow, account_id, account_service_id, actor=actor
    )
    return _account_service_out(removed)


# -- transactions -------------------------------------------------------------------------


@router.get(
    "/accounts/{account_id}/transactions",
    response_model=list[TransactionOut],
    tags=["transactions"],
)
async def list_transactions(account_id: int, uow: UnitOfWorkDep) -> list[TransactionOut]:
    """Every transaction, oldest first, with the running balance."""
    return [
        _transaction_out(v.transaction, v.balance)
        for v in await queries.list_transactions(uow, account_id)
    ]


@router.post(
    "/accounts/{account_id}/debits",
    response_model=TransactionOut,
    status_code=201,
    tags=["transactions"],
)
async def add_debit(
    account_id: int, body: DebitIn, uow: UnitOfWorkDep, actor: ActorDep
) -> TransactionOut:
    """A one-time transaction of a service, or an adjustment (a negative one is a discount)."""
    return _transaction_out(
        await transactions.add_one_time_debit(
            uow,
            account_id,
            body.service_id,
            quantity=body.quantity,
            amount=body.amount,
            description=body.description,
            actor=actor,
        )
    )


@router.post(
    "/accounts/{account_id}/discounts",
    response_model=TransactionOut,
    status_code=201,
    tags=["transactions"],
)
async def add_discount(
    account_id: int, body: DiscountIn, uow: UnitOfWorkDep, actor: ActorDep
) -> TransactionOut:
    """A credit to the account, applied to its open invoices."""
    return _transaction_out(
        await transactions.add_discount(uow, account_id, body.amount, body.description, actor=actor)
    )


@router.post(
    "/accounts/{account_id}/payments",
    response_model=TransactionOut,
    status_code=201,
    tags=["transactions"],
)
async def receive_payment(
    account_id: int, body: PaymentIn, uow: UnitOfWorkDep, actor: ActorDep
) -> TransactionOut:
    """A cash, check, wire, card or bank payment (cards and banks by processor token only),
    applied to the named invoice, then to open invoices oldest first."""
    return _transaction_out(
        await transactions.receive_payment(
            uow,
            account_id,
            body.amount,
            body.method,
            actor=actor,
            token=body.token,
            reference=body.reference,
            invoice_id=body.invoice_id,
        )
    )


@router.post(
    "/transactions/{transaction_id}/reverse",
    response_model=TransactionOut,
    status_code=201,
    tags=["transactions"],
)
async def reverse_transaction(
    transaction_id: int, uow: UnitOfWorkDep, actor: ActorDep, body: ReverseIn | None = None
) -> TransactionOut:
    """Reverse a debit (a discount pays down its invoice) or a payment."""
    reason = body.reason if body else None
    return _transaction_out(
        await transactions.reverse_transaction(uow, transaction_id, actor=actor, reason=reason)
    )


@router.patch(
    "/transactions/{transaction_id}", response_model=TransactionOut, tags=["transactions"]
)
async def edit_debit(
    transaction_id: int, body: DebitEditIn, uow: UnitOfWorkDep, actor: ActorDep
) -> TransactionOut:
    """Edit a debit's description."""
    return _transaction_out(
        await transactions.edit_debit_description(
            uow, transaction_id, body.description, actor=actor
        )
    )


@router.get("/transactions/{transaction_id}", response_model=TransactionOut, tags=["transactions"])
async def get_transaction(transaction_id: int, uow: UnitOfWorkDep) -> TransactionOut:
    """One transaction."""
    return _transaction_out(await queries.get_transaction(uow, transaction_id))


# -- invoices -----------------------------------------------------------------------------


@router.get("/accounts/{account_id}/invoices", response_model=list[InvoiceOut], tags=["invoices"])
async def list_invoices(account_id: int, uow: UnitOfWorkDep) -> list[InvoiceOut]:
    """The account's invoices, newest first, with paid, remaining, state and lines."""
    return [_invoice_out(v) for v in await queries.list_invoices(uow, account_id)]


@router.post(
    "/accounts/{account_id}/invoices",
    response_model=InvoiceOut,
    status_code=201,
    tags=["invoices"],
)
async def create_invoice(account_id: int, uow: UnitOfWorkDep, actor: ActorDep) -> InvoiceOut:
    """Invoice every uninvoiced debit now (a manual invoice)."""
    invoice = await invoices.create_manual_invoice(uow, account_id, actor=actor)
    return _invoice_out(await queries.get_invoice(uow, invoice.id))


@router.get("/invoices/{invoice_id}", response_model=InvoiceOut, tags=["invoices"])
async def get_invoice(invoice_id: int, uow: UnitOfWorkDep) -> InvoiceOut:
    """One invoice with its lines and linked child invoices."""
    return _invoice_out(await queries.get_invoice(uow, invoice_id))


@router.patch("/invoices/{invoice_id}", response_model=InvoiceOut, tags=["invoices"])
async def edit_invoice(invoice_id: int, body: InvoiceEditIn, uow: UnitOfWorkDep) -> InvoiceOut:
    """Freeze or unfreeze the invoice, or edit its printed message."""
    await invoices.edit_invoice(
        uow,
        invoice_id,
        frozen=body.frozen,
        message=body.message,
        message_given="message" in body.model_fields_set,
    )
    return _invoice_out(await queries.get_invoice(uow, invoice_id))


@router.post("/invoices/{invoice_id}/void", response_model=InvoiceOut, tags=["invoices"])
async def void_invoice(invoice_id: int, uow: UnitOfWorkDep, actor: ActorDep) -> InvoiceOut:
    """Void: credits removed, debits reversed by discounts that zero it, locked."""
    await invoices.void_invoice(uow, invoice_id, actor=actor)
    return _invoice_out(await queries.get_invoice(uow, invoice_id))


@router.post("/invoices/{invoice_id}/apply-credits", response_model=InvoiceOut, tags=["invoices"])
async def apply_credits(
    invoice_id: int, uow: UnitOfWorkDep, actor: ActorDep, body: ApplyCreditsIn | None = None
) -> InvoiceOut:
    """Apply available credits to the invoice: all that fits, or the amount given."""
    await invoices.apply_credits(uow, invoice_id, body.amount if body else None, actor=actor)
    return _invoice_out(await queries.get_invoice(uow, invoice_id))


@router.delete("/invoices/{invoice_id}", status_code=204, tags=["invoices"])
async def delete_invoice(invoice_id: int, uow: UnitOfWorkDep, actor: ActorDep) -> Response:
    """Delete a manual invoice dated after the accounting period close."""
    await invoices.delete_invoice(uow, invoice_id, actor=actor)
    return Response(status_code=204)


@router.post("/invoices/{invoice_id}/child-invoices", response_model=InvoiceOut, tags=["invoices"])
async def link_child_invoice(
    invoice_id: int, body: LinkInvoiceIn, uow: UnitOfWorkDep
) -> InvoiceOut:
    """Link a child account's invoice to this parent invoice (a manual repair)."""
    await invoices.link_invoice(uow, invoice_id, body.child_invoice_id, link=True)
    return _invoice_out(await queries.get_invoice(uow, invoice_id))


@router.delete(
    "/invoices/{invoice_id}/child-invoices/{child_invoice_id}",
    response_model=InvoiceOut,
    tags=["invoices"],
)
async def unlink_child_invoice(
    invoice_id: int, child_invoice_id: int, uow: UnitOfWorkDep
) -> InvoiceOut:
    """Unlink a child's invoice; the child pays it itself again."""
    await invoices.link_invoice(uow, invoice_id, child_invoice_id, link=False)
    return _invoice_out(await queries.get_invoice(uow, invoice_id))


@router.get("/accounts/{account_id}/balance", response_model=BalanceOut, tags=["invoices"])
async def get_balance(account_id: int, uow: UnitOfWorkDep) -> BalanceOut:
    """Balance due, available credits, total balance and next recurring charge (seed 003)."""
    account, banner = await queries.account_balances(uow, account_id)
    return BalanceOut(
        account_id=account.id,
        currency=account.currency,
        balance_due=banner.balance_due,
        available_credits=banner.available_credits,
        uninvoiced_debits=banner.uninvoiced_debits,
        total_balance=banner.total_balance,
        next_recurring_charge=banner.next_recurring_charge,
        delinquent=account.delinquent,
    )


# -- billing runs and settings ------------------------------------------------------------


@router.post("/billing-runs", response_model=BillingRunOut, status_code=201, tags=["billing runs"])
async def run_billing(body: BillingRunIn, uow: UnitOfWorkDep, actor: ActorDep) -> BillingRunOut:
    """Bill every activating account whose billing day is the date's day, for the period
    starting that day; a rerun bills nobody twice."""
    return BillingRunOut.model_validate(await billing_runs.run_billing(uow, body.date, actor=actor))


@router.get("/billing-runs", response_model=list[BillingRunOut], tags=["billing runs"])
async def list_billing_runs(uow: UnitOfWorkDep) -> list[BillingRunOut]:
    """Past billing runs, newest first."""
    return [BillingRunOut.model_validate(r) for r in await queries.list_billing_runs(uow)]


@router.get("/billing-runs/{run_id}", response_model=BillingRunOut, tags=["billing runs"])
async def get_billing_run(run_id: int, uow: UnitOfWorkDep) -> BillingRunOut:
    """One billing run and what it did."""
    return BillingRunOut.model_validate(await queries.get_billing_run(uow, run_id))


@router.post("/delinquency-checks", response_model=DelinquencyCheckOut, tags=["billing runs"])
async def check_delinquency(body: DelinquencyCheckIn, uow: UnitOfWorkDep) -> DelinquencyCheckOut:
    """Mark invoices past due plus the grace period as of the date (billing runs do it too)."""
    changed = await billing_runs.check_delinquency(uow, body.date)
    return DelinquencyCheckOut(date=body.date, accounts_changed=changed)


def _settings_out(values: dict[str, str]) -> SettingsOut:
    close = values[rules.SETTING_PERIOD_CLOSE]
    return SettingsOut(
        final_invoice_proration=Proration(values[rules.SETTING_PRORATION]),
        invoice_due_days=int(values[rules.SETTING_DUE_DAYS]),
        delinquency_grace_days=int(values[rules.SETTING_GRACE_DAYS]),
        accounting_period_close=date.fromisoformat(close) if close else None,
        default_tax_rate=Decimal(values[rules.SETTING_DEFAULT_TAX_RATE]),
    )


@router.get("/settings", response_model=SettingsOut, tags=["settings"])
async def get_settings(uow: UnitOfWorkDep) -> SettingsOut:
    """Billing settings: the global final-invoice proration, due days, grace days, the
    accounting period close and the default tax rate."""
    return _settings_out(await settings.load_settings(uow))


@router.put("/settings", response_model=SettingsOut, tags=["settings"])
async def put_settings(body: SettingsIn, uow: UnitOfWorkDep, actor: ActorDep) -> SettingsOut:
    """Change billing settings; fields left out keep their value."""
    if body.final_invoice_proration is Proration.INHERIT:
        raise InvalidInput("final_invoice_proration is the global setting: none or credit_unused")
    changes: dict[str, str] = {}
    clearable = {rules.SETTING_PERIOD_CLOSE, rules.SETTING_DEFAULT_TAX_RATE}
    for key in body.model_fields_set:
        value = getattr(body, key)
        if value is None and key not in clearable:
            raise InvalidInput(f"{key} cannot be null; leave it out to keep its value")
        if key == rules.SETTING_DEFAULT_TAX_RATE:
            value = rules.parse_rate(value) if value is not None else "0"
        changes[key] = "" if value is None else str(getattr(value, "value", value))
    return _settings_out(await settings.update_settings(uow, changes, actor=actor))
