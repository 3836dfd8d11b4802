"""Request and response bodies of the scheduler API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from scheduler.domain.rules import Action, State, VacationState


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


_RUN_AT = "ISO-8601 date-time; without an offset it is read in time_zone"
_ZONE = "IANA time zone name (e.g. America/Chicago), used when a time has no offset"


class ScheduledEventIn(_In):
    account_id: int = Field(ge=1)
    action: Action
    run_at: datetime = Field(description=_RUN_AT)
    time_zone: str | None = Field(default=None, max_length=64, description=_ZONE)
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "disconnect: proration; change_status: status_id, reason; "
            "add_service: service_id, quantity, price_override; remove_service: service_id"
        ),
    )
    note: str | None = Field(default=None, max_length=2000)


class ScheduledEventPatch(_In):
    run_at: datetime | None = Field(default=None, description=_RUN_AT)
    time_zone: str | None = Field(default=None, max_length=64, description=_ZONE)
    parameters: dict[str, Any] | None = None
    note: str | None = Field(default=None, max_length=2000)


class ScheduledEventOut(_Out):
    id: UUID
    account_id: int
    action: Action
    parameters: dict[str, Any]
    run_at: datetime = Field(description="UTC")
    time_zone: str | None
    state: State
    note: str | None
    warnings: list[str] = Field(description="Why it may fail at its time, as foreseen")
    vacation_id: UUID | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    dispatched_at: datetime | None
    command_event_id: UUID | None = Field(description="The command's event id once dispatched")
    completed_at: datetime | None = Field(description="When it completed or failed")
    outcome: dict[str, Any] = Field(description="Ids of what the owning service produced")
    failure_reason: str | None
    failure_code: str | None = Field(description="not_found, conflict, invalid or no_answer")
    cancelled_at: datetime | None
    cancelled_by: str | None


class ScheduledEventPage(BaseModel):
    items: list[ScheduledEventOut]
    total: int
    limit: int
    offset: int


class VacationIn(_In):
    account_id: int = Field(ge=1)
    leave_at: datetime = Field(description=_RUN_AT)
    return_at: datetime = Field(description=_RUN_AT)
    time_zone: str | None = Field(default=None, max_length=64, description=_ZONE)
    vacation_status_id: int = Field(ge=1)
    vacation_service_id: int = Field(ge=1, description="The data service while away")
    normal_status_id: int | None = Field(
        default=None, ge=1, description="Status on return; default: the account's current one"
    )
    normal_service_id: int | None = Field(
        default=None,
        ge=1,
        description="Data service on return; default: the account's current data service",
    )
    note: str | None = Field(default=None, max_length=2000)


class VacationPatch(_In):
    leave_at: datetime | None = Field(default=None, description=_RUN_AT)
    return_at: datetime | None = Field(default=None, description=_RUN_AT)
    time_zone: str | None = Field(default=None, max_length=64, description=_ZONE)


class VacationOut(_Out):
    id: UUID
    account_id: int
    state: VacationState
    leave_at: datetime
    return_at: datetime
    time_zone: str | None
    vacation_status_id: int
    vacation_service_id: int
    normal_status_id: int
    normal_service_id: int | None
    note: str | None
    created_by: str
    created_at: datetime
    cancelled_at: datetime | None
    warnings: list[str]
    events: list[ScheduledEventOut]
