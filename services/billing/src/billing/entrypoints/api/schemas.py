"""Request and response bodies of the billing API. Amounts are decimal strings."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from backhaul_contracts.common import Proration, ServiceKind
from billing.domain.rules import PaymentMethod

# Decimal strings both ways: never a JSON float for money.
Amount = Annotated[Decimal, PlainSerializer(lambda v: str(v), return_type=str)]
AmountIn = Annotated[
    Decimal, Field(allow_inf_nan=False, max_digits=14, description='Decimal string, e.g. "49.99"')
]
RateIn = Annotated[Decimal, Field(ge=0, le=100, description='Percent, e.g. "8.25"')]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ServiceIn(_In):
    name: str = Field(min_length=1, max_length=200)
    kind: ServiceKind
    price: AmountIn
    currency: str = Field(default="USD", pattern=r"^[A-Za-z]{3}$")
    download_kbps: int | None = Field(default=None, ge=1)
    upload_kbps: int | None = Field(default=None, ge=1)
    prorates: bool = True
    tax_rate: RateIn | None = None


class ServiceOut(_Out):
    id: int
    name: str
    kind: ServiceKind
    price: Amount
    currency: str
    download_kbps: int | None
    upload_kbps: int | None
    prorates: bool
    tax_rate: Amount | None


class PackageItemIn(_In):
    service_id: int
    quantity: int = Field(default=1, ge=1, le=10_000)
    price_override: AmountIn | None = None


class PackageIn(_In):
    name: str = Field(min_length=1, max_length=200)
    services: list[PackageItemIn] = Field(min_length=1, max_length=100)


class PackageItemOut(_Out):
    service: ServiceOut
    quantity: int
    price_override: Amount | None


class PackageOut(_Out):
    id: int
    name: str
    items: list[PackageItemOut]


class AccountServiceIn(_In):
    service_id: int
    quantity: int = Field(default=1, ge=1, le=10_000)
    price_override: AmountIn | None = None
    prorates: bool | None = Field(default=None, description="Default: the service's setting")


class AccountPackageIn(_In):
    package_id: int


class AccountServiceOut(_Out):
    id: int
    account_id: int
    service: ServiceOut
    package_id: int | None
    quantity: int
    price: Amount
    price_override: bool
    prorates: bool
    addition_prorate_date: date | None
    billed_through: date | None
    added_at: datetime
    removed_at: datetime | None


class DebitIn(_In):
    service_id: int
    quantity: int = Field(default=1, ge=1, le=10_000)
    amount: AmountIn | None = Field(default=None, description="Unit price; default the service's")
    description: str | None = Field(default=None, max_length=400)


class DiscountIn(_In):
    amount: AmountIn
    description: str = Field(min_length=1, max_length=400)


class PaymentIn(_In):
    amount: AmountIn
    method: PaymentMethod
    token: str | None = Field(
        default=None,
        max_length=200,
        description="The payment processor's token for card and bank payments; never a number",
    )
    reference: str | None = Field(default=None, max_length=200, description="e.g. a cheque no.")
    invoice_id: int | None = None


class DebitEditIn(_In):
    description: str = Field(min_length=1, max_length=400)


class ReverseIn(_In):
    reason: str | None = Field(default=None, max_length=400)


class TransactionOut(_Out):
    id: int
    account_id: int
    type: str
    amount: Amount
    tax: Amount
    tax_rate: Amount | None
    total: Amount
    balance: Amount | None = None
    currency: str
    description: str
    service_id: int | None
    account_service_id: int | None
    quantity: int | None
    period_start: date | None
    period_end: date | None
    invoice_id: int | None
    payment_method: str | None
    payment_token: str | None
    reference: str | None
    reverses_id: int | None
    reversed: bool
    created_at: datetime
    created_by: str


class ChildInvoiceOut(_Out):
    id: int
    number: str | None
    account_id: int
    invoice_date: date
    total: Amount
    remaining: Amount


class InvoiceOut(_Out):
    id: int
    number: str | None
    account_id: int
    bill_to_account_id: int
    parent_invoice_id: int | None
    final: bool
    manual: bool
    frozen: bool
    void: bool
    delinquent: bool
    state: str
    disconnection_id: UUID | None
    currency: str
    total: Amount
    paid: Amount
    remaining: Amount
    issued_at: datetime
    invoice_date: date
    due_date: date
    period_start: date | None
    period_end: date | None
    months: int
    message: str | None
    voided_at: datetime | None
    voided_by: str | None
    lines: list[TransactionOut]
    debits: list[TransactionOut]
    child_invoices: list[ChildInvoiceOut]
    children_remaining: Amount


class InvoiceEditIn(_In):
    frozen: bool | None = None
    message: str | None = Field(default=None, max_length=2000)


class ApplyCreditsIn(_In):
    amount: AmountIn | None = Field(default=None, description="Default: all that fits")


class LinkInvoiceIn(_In):
    child_invoice_id: int


class BalanceOut(BaseModel):
    account_id: int
    currency: str
    balance_due: Amount
    available_credits: Amount
    uninvoiced_debits: Amount
    total_balance: Amount
    next_recurring_charge: Amount
    delinquent: bool


class BillingAccountOut(BaseModel):
    id: int
    name: str
    status_id: int
    status_name: str
    activates: bool
    parent_account_id: int | None
    child_account_ids: list[int]
    billing_day: int
    disconnected_at: datetime | None
    delinquent: bool
    tax_exempt: bool
    tax_rate: Amount | None
    currency: str


class BillingConfigurationIn(_In):
    tax_exempt: bool | None = None
    tax_rate: RateIn | None = Field(default=None, description="Override; null clears it")


class SettingsIn(_In):
    final_invoice_proration: Proration | None = Field(
        default=None, description="none or credit_unused (what `inherit` resolves to)"
    )
    invoice_due_days: int | None = Field(default=None, ge=0, le=365)
    delinquency_grace_days: int | None = Field(default=None, ge=0, le=365)
    accounting_period_close: date | None = None
    default_tax_rate: RateIn | None = None


class SettingsOut(BaseModel):
    final_invoice_proration: Proration
    invoice_due_days: int
    delinquency_grace_days: int
    accounting_period_close: date | None
    default_tax_rate: Amount


class BillingRunIn(_In):
    date: date


class BillingRunOut(_Out):
    id: int
    run_date: date
    started_at: datetime
    finished_at: datetime | None
    requested_by: str
    accounts_billed: int
    accounts_skipped: int
    invoices_issued: int
    total: dict[str, str]


class DelinquencyCheckIn(_In):
    date: date


class DelinquencyCheckOut(BaseModel):
    date: date
    accounts_changed: int
