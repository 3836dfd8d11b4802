"""The scheduler database, as SQLAlchemy 2 mapped classes."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from backhaul_kit.db import UtcDateTime, partial_index


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, list[str]: JSON}


class Vacation(Base):
    """A customer's time away (seed 002): the linked scheduled events are its rows' children."""

    __tablename__ = "vacations"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    leave_at: Mapped[datetime] = mapped_column(UtcDateTime())
    return_at: Mapped[datetime] = mapped_column(UtcDateTime())
    time_zone: Mapped[str | None] = mapped_column(String(64))
    vacation_status_id: Mapped[int] = mapped_column(Integer)
    vacation_service_id: Mapped[int] = mapped_column(Integer)
    normal_status_id: Mapped[int] = mapped_column(Integer)
    normal_service_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ScheduledEvent(Base):
    __tablename__ = "scheduled_events"

    id: Mapped[UUID] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(30))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Orders events of one account due at the same instant (a vacation's remove before add).
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    time_zone: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    vacation_id: Mapped[UUID | None] = mapped_column(ForeignKey("vacations.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The command's event id: outcomes name it in their causation_id.
    command_event_id: Mapped[UUID | None] = mapped_column(unique=True)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    failure_code: Mapped[str | None] = mapped_column(String(30))
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    cancelled_by: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_scheduled_events_due", "state", "run_at"),
        # The timer's two scans, each over its own state only: firing walks pending events in
        # firing order (so a claim of 1,000 is an index range, not a sort of everything due),
        # and the answer timeout walks dispatched events by dispatch time.
        partial_index(
            "ix_scheduled_events_firing_order",
            "run_at",
            "sequence",
            "created_at",
            "id",
            where="state = 'pending'",
        ),
        partial_index(
            "ix_scheduled_events_awaiting_answer", "dispatched_at", where="state = 'dispatched'"
        ),
    )


class KnownAccount(Base):
    """The replica of accounts built from accounts.events.v1: exists, status, disconnected."""

    __tablename__ = "known_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200))
    status_id: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    disconnected: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class KnownAccountService(Base):
    """The replica of the services on each account, from billing.events.v1."""

    __tablename__ = "known_account_services"

    account_service_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    service_id: Mapped[int] = mapped_column(Integer)


class KnownService(Base):
    """The replica of billing's service catalogue: from ServiceDefined, and from the services
    seen on accounts (AccountServiceAdded/Removed). Its kind decides warnings; a service not
    here cannot be scheduled for addition."""

    __tablename__ = "known_services"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))


class KnownStatus(Base):
    """The replica of accounts' status catalogue (AccountStatusDefined/Deleted): a status not
    here cannot be scheduled."""

    __tablename__ = "known_statuses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    activates_account: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


__all__ = [
    "Base",
    "KnownAccount",
    "KnownAccountService",
    "KnownService",
    "KnownStatus",
    "ScheduledEvent",
    "Vacation",
]
