"""The accounts database, as SQLAlchemy 2 mapped classes."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from backhaul_kit.db import UtcDateTime


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, list[str]: JSON}


class AccountStatus(Base):
    __tablename__ = "account_statuses"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    activates_account: Mapped[bool] = mapped_column(Boolean)
    icon: Mapped[str] = mapped_column(String(50))
    colour: Mapped[str] = mapped_column(String(20))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class AccountType(Base):
    __tablename__ = "account_types"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


class AccountGroup(Base):
    __tablename__ = "account_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


account_group_members = Table(
    "account_group_members",
    Base.metadata,
    Column("account_id", ForeignKey("accounts.id"), primary_key=True),
    Column("group_id", ForeignKey("account_groups.id"), primary_key=True),
)


class ServiceableAddress(Base):
    """A place service can be delivered; at most one account holds it at a time."""

    __tablename__ = "serviceable_addresses"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(400), unique=True)
    line1: Mapped[str] = mapped_column(String(200))
    line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str] = mapped_column(String(2))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), unique=True)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    account_type_id: Mapped[int | None] = mapped_column(ForeignKey("account_types.id"))
    status_id: Mapped[int] = mapped_column(ForeignKey("account_statuses.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    billing_day: Mapped[int] = mapped_column(Integer, default=1)
    mailing_address: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    disconnected_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    status: Mapped[AccountStatus] = relationship(lazy="joined")
    account_type: Mapped[AccountType | None] = relationship(lazy="joined")
    serviceable_address: Mapped[ServiceableAddress | None] = relationship(
        lazy="joined", foreign_keys=[ServiceableAddress.account_id]
    )
    contacts: Mapped[list[Contact]] = relationship(
        lazy="selectin", order_by="Contact.id", back_populates="account"
    )
    groups: Mapped[list[AccountGroup]] = relationship(
        secondary=account_group_members, lazy="selectin", order_by="AccountGroup.name"
    )

    __table_args__ = (Index("ix_accounts_status", "status_id"), Index("ix_accounts_name", "name"))


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    message_categories: Mapped[list[str]] = mapped_column(JSON, default=list)

    account: Mapped[Account] = relationship(back_populates="contacts")


class Note(Base):
    __tablename__ = "account_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    body: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Task(Base):
    __tablename__ = "account_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(String(200))
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    completed: Mapped[bool] = mapped_column(Boolean, default=False)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Disconnection(Base):
    """The disconnection log: when, by whom, from which address, and its fan-out."""

    __tablename__ = "disconnections"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    disconnected_at: Mapped[datetime] = mapped_column(UtcDateTime())
    disconnected_by: Mapped[str] = mapped_column(String(200))
    address: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    previous_status_id: Mapped[int] = mapped_column(ForeignKey("account_statuses.id"))
    status_id: Mapped[int] = mapped_column(ForeignKey("account_statuses.id"))
    proration: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[UUID] = mapped_column(unique=True)

    steps: Mapped[list[DisconnectionStep]] = relationship(
        lazy="selectin", order_by="DisconnectionStep.step", back_populates="disconnection"
    )


class DisconnectionStep(Base):
    __tablename__ = "disconnection_steps"

    disconnection_id: Mapped[UUID] = mapped_column(
        ForeignKey("disconnections.id"), primary_key=True
    )
    step: Mapped[str] = mapped_column(String(40), primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)

    disconnection: Mapped[Disconnection] = relationship(back_populates="steps")


class AccountLog(Base):
    """The action history: who did what to an account, when, and what changed."""

    __tablename__ = "account_logs"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(400))


__all__ = [
    "Account",
    "AccountGroup",
    "AccountLog",
    "AccountStatus",
    "AccountType",
    "Base",
    "Contact",
    "Disconnection",
    "DisconnectionStep",
    "Note",
    "ServiceableAddress",
    "Setting",
    "Task",
    "UniqueConstraint",
]
