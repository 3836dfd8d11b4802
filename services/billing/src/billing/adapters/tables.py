"""The billing database, as SQLAlchemy 2 mapped classes.

Amounts are stored as whole cents in integer columns (`Cents`): exact on SQLite and
PostgreSQL alike, summable in SQL, and never a float on the way in or out.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from backhaul_kit.db import UtcDateTime
from billing.domain.money import from_cents, to_cents


class Cents(TypeDecorator[Decimal]):
    """A Decimal amount kept as integer cents."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        return None if value is None else to_cents(Decimal(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else from_cents(int(value))


class Rate(TypeDecorator[Decimal]):
    """A tax rate in percent, kept as text so it round-trips exactly."""

    impl = String(20)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, Decimal: Cents}


class BillingAccount(Base):
    """Billing's replica of an account, built from accounts.events.v1, plus its billing
    configuration (tax exemption and override) which billing itself owns."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200))
    status_id: Mapped[int] = mapped_column(Integer)
    status_name: Mapped[str] = mapped_column(String(100))
    activates: Mapped[bool] = mapped_column(Boolean)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    billing_day: Mapped[int] = mapped_column(Integer, default=1)
    disconnected_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    delinquent: Mapped[bool] = mapped_column(Boolean, default=False)
    tax_exempt: Mapped[bool] = mapped_column(Boolean, default=False)
    tax_rate: Mapped[Decimal | None] = mapped_column(Rate)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Service(Base):
    """A catalogue service."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    price: Mapped[Decimal] = mapped_column(Cents)
    currency: Mapped[str] = mapped_column(String(3))
    download_kbps: Mapped[int | None] = mapped_column(Integer)
    upload_kbps: Mapped[int | None] = mapped_column(Integer)
    prorates: Mapped[bool] = mapped_column(Boolean, default=True)
    tax_rate: Mapped[Decimal | None] = mapped_column(Rate)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Package(Base):
    """A named bundle of services added to an account in one step."""

    __tablename__ = "packages"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    items: Mapped[list[PackageItem]] = relationship(
        lazy="selectin", order_by="PackageItem.id", cascade="all, delete-orphan"
    )


class PackageItem(Base):
    __tablename__ = "package_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    package_id: Mapped[int] = mapped_column(ForeignKey("packages.id"), index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    price_override: Mapped[Decimal | None] = mapped_column(Cents)
    service: Mapped[Service] = relationship(lazy="joined")


class AccountService(Base):
    """A service on an account, with quantity, the price it is billed at and how far it is
    billed (`billed_through`, the last day of the last period charged)."""

    __tablename__ = "account_services"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    package_id: Mapped[int | None] = mapped_column(ForeignKey("packages.id"))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    price: Mapped[Decimal] = mapped_column(Cents)
    price_override: Mapped[bool] = mapped_column(Boolean, default=False)
    prorates: Mapped[bool] = mapped_column(Boolean, default=True)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime())
    addition_prorate_date: Mapped[date | None] = mapped_column(Date)
    billed_through: Mapped[date | None] = mapped_column(Date)
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    service: Mapped[Service] = relationship(lazy="joined")

    __table_args__ = (Index("ix_account_services_account", "account_id", "removed_at"),)


class Invoice(Base):
    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(40), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    # Who pays it: the account itself, or its parent for a child's recurring invoice.
    bill_to_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    parent_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    invoice_date: Mapped[date] = mapped_column(Date)
    due_date: Mapped[date] = mapped_column(Date)
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[Decimal] = mapped_column(Cents)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)
    void: Mapped[bool] = mapped_column(Boolean, default=False)
    voided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    voided_by: Mapped[str | None] = mapped_column(String(200))
    delinquent: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str | None] = mapped_column(Text)
    disconnection_id: Mapped[UUID | None] = mapped_column(unique=True)
    billing_run_id: Mapped[int | None] = mapped_column(ForeignKey("billing_runs.id"))


class Transaction(Base):
    """One line of the ledger. Amounts are positive; the type says which way they go."""

    __tablename__ = "transactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    type: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(Cents)
    tax: Mapped[Decimal] = mapped_column(Cents, default=Decimal("0.00"))
    tax_rate: Mapped[Decimal | None] = mapped_column(Rate)
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(400))
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"))
    account_service_id: Mapped[int | None] = mapped_column(ForeignKey("account_services.id"))
    quantity: Mapped[int | None] = mapped_column(Integer)
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    # A debit (or an invoice-line credit) belongs to at most one invoice.
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True)
    payment_method: Mapped[str | None] = mapped_column(String(20))
    payment_token: Mapped[str | None] = mapped_column(String(200))
    reference: Mapped[str | None] = mapped_column(String(200))
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("transactions.id"), unique=True)
    reversed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(200))

    __table_args__ = (Index("ix_transactions_account", "account_id", "type"),)


class CreditApplication(Base):
    """Part of a credit (payment or discount) paying part of an invoice."""

    __tablename__ = "credit_applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    credit_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), index=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Cents)
    applied_at: Mapped[datetime] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class BillingRun(Base):
    __tablename__ = "billing_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_date: Mapped[date] = mapped_column(Date)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    requested_by: Mapped[str] = mapped_column(String(200))
    accounts_billed: Mapped[int] = mapped_column(Integer, default=0)
    accounts_skipped: Mapped[int] = mapped_column(Integer, default=0)
    invoices_issued: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class BilledPeriod(Base):
    """That an account was billed for a period: what makes a billing run idempotent."""

    __tablename__ = "billed_periods"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    billing_run_id: Mapped[int] = mapped_column(ForeignKey("billing_runs.id"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(400))


__all__ = [
    "AccountService",
    "Base",
    "BilledPeriod",
    "BillingAccount",
    "BillingRun",
    "CreditApplication",
    "Invoice",
    "Package",
    "PackageItem",
    "Service",
    "Setting",
    "Transaction",
    "UniqueConstraint",
]
