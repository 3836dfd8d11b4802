"""Events and commands of the billing service."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from pydantic import Field

from backhaul_contracts.common import Proration, ServiceKind, ServiceRef
from backhaul_contracts.envelope import Event, register
from backhaul_contracts.topics import BILLING_COMMANDS, BILLING_EVENTS


class _BillingEvent(Event):
    topic = BILLING_EVENTS


@register
class AccountServiceAdded(_BillingEvent):
    event_type = "AccountServiceAdded"

    account_id: int
    account_service_id: int
    service: ServiceRef
    quantity: int = Field(ge=1)
    price: Decimal
    added_at: datetime


@register
class AccountServiceRemoved(_BillingEvent):
    event_type = "AccountServiceRemoved"

    account_id: int
    account_service_id: int
    service: ServiceRef
    removed_at: datetime


@register
class InvoiceIssued(_BillingEvent):
    event_type = "InvoiceIssued"

    account_id: int
    invoice_id: int
    number: str
    total: Decimal
    currency: str
    issued_at: datetime
    due_date: date
    period_start: date | None = None
    period_end: date | None = None
    final: bool = False
    disconnection_id: UUID | None = None
    debit_ids: list[int] = Field(default_factory=list)
    bill_to_account_id: int | None = Field(
        default=None, description="Who pays it: the parent for a child's recurring invoice"
    )
    parent_invoice_id: int | None = None
    credit_total: Decimal | None = Field(
        default=None, description="Credits shown on the invoice (a final invoice's proration)"
    )
    proration: Proration | None = Field(
        default=None, description="A final invoice's resolved proration: none or credit_unused"
    )


@register
class InvoiceVoided(_BillingEvent):
    event_type = "InvoiceVoided"

    account_id: int
    invoice_id: int
    number: str
    voided_at: datetime
    voided_by: str


@register
class PaymentReceived(_BillingEvent):
    event_type = "PaymentReceived"

    account_id: int
    payment_id: int
    amount: Decimal
    currency: str
    method: str
    received_at: datetime


@register
class AccountDelinquencyChanged(_BillingEvent):
    event_type = "AccountDelinquencyChanged"

    account_id: int
    delinquent: bool
    invoice_ids: list[int] = Field(default_factory=list)
    changed_at: datetime


# -- the service catalogue ----------------------------------------------------------------
# A catalogue service is about no account, so its events go under the subject
# `service:<id>` (the Kafka key too): one service's events stay in order, and consumers that
# look for an account id in the subject find none and skip it.


def service_subject(service_id: int) -> str:
    """The envelope subject (and Kafka key) of a catalogue service's events."""
    return f"service:{service_id}"


@register
class ServiceDefined(_BillingEvent):
    """A catalogue service as it now is: emitted when it is created (and edited, should that
    become possible), and once for the services that existed before this event did. An
    upsert: the latest one wins."""

    event_type = "ServiceDefined"

    service_id: int
    name: str
    kind: ServiceKind
    price: Decimal
    currency: str = Field(min_length=3, max_length=3)
    download_kbps: int | None = None
    upload_kbps: int | None = None
    prorates: bool = True
    tax_rate: Decimal | None = None
    defined_at: datetime

    @property
    def subject(self) -> str:
        return service_subject(self.service_id)


class _BillingCommand(Event):
    topic = BILLING_COMMANDS


@register
class AddAccountService(_BillingCommand):
    event_type = "AddAccountService"

    account_id: int
    service_id: int
    quantity: int = Field(default=1, ge=1)
    price_override: Decimal | None = None
    requested_by: str


@register
class RemoveAccountService(_BillingCommand):
    event_type = "RemoveAccountService"

    account_id: int
    service_id: int
    requested_by: str
