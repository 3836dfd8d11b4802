"""The notifications database, as SQLAlchemy 2 mapped classes."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from backhaul_kit.db import UtcDateTime


class Base(DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        list[str]: JSON,
        datetime: UtcDateTime,
    }


class AccountReplica(Base):
    """What notifications knows of an account, from accounts' events (never a query to it)."""

    __tablename__ = "account_replicas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200))
    parent_account_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column()


class ContactReplica(Base):
    __tablename__ = "contact_replicas"

    contact_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    message_categories: Mapped[list[str]] = mapped_column(JSON, default=list)


class Trigger(Base):
    """An event type (and conditions on its payload) that sends a templated message."""

    __tablename__ = "triggers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    event_type: Mapped[str] = mapped_column(String(100), index=True)
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    audience: Mapped[str] = mapped_column(String(30))
    category: Mapped[str | None] = mapped_column(String(100))
    # For the staff audience: where this trigger's mail goes instead of STAFF_EMAIL.
    address: Mapped[str | None] = mapped_column(String(320))
    subject_template: Mapped[str] = mapped_column(Text)
    body_template: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    shipped: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()


class Email(Base):
    """The email log (seed 003, Correspondence), and the delivery queue itself.

    One row per triggering event and recipient (`idempotency_key`): the row is committed as
    Queued before any SMTP traffic, so a redelivered event or a restarted worker finds it.
    """

    __tablename__ = "emails"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(400))
    message_id: Mapped[str] = mapped_column(String(300))
    account_id: Mapped[int] = mapped_column(Integer)
    contact_id: Mapped[int | None] = mapped_column(Integer)
    trigger_id: Mapped[int | None] = mapped_column(Integer)
    trigger_event_id: Mapped[UUID] = mapped_column()
    trigger_event_type: Mapped[str] = mapped_column(String(100))
    # The triggering flow's correlation id: EmailSent/EmailRejected, emitted later by the
    # dispatcher, stay in the same trace of events as the event that caused them.
    correlation_id: Mapped[UUID | None] = mapped_column()
    # The trigger's trace context (W3C headers): the send joins the trace that caused it.
    trace_headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    disconnection_id: Mapped[UUID | None] = mapped_column()
    category: Mapped[str | None] = mapped_column(String(100))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(1000))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    reject_reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    # Set (and committed) just before an SMTP attempt, cleared when its outcome is recorded.
    sending_since: Mapped[datetime | None] = mapped_column()
    # The attempt's claim token, set with `sending_since`: only the worker holding it may mark
    # DATA or record the outcome, so a claim taken away (requeued, closed) fences it out.
    claim_id: Mapped[UUID | None] = mapped_column()
    # Committed just before the SMTP DATA command: from then on the message may be delivered.
    # A claim that expires without it is sent again; one that expires with it never is.
    data_started_at: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    rejected_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_emails_idempotency_key"),
        Index("ix_emails_account", "account_id", "queued_at"),
        Index("ix_emails_due", "state", "next_attempt_at"),
    )


__all__ = ["AccountReplica", "Base", "ContactReplica", "Email", "Trigger"]
