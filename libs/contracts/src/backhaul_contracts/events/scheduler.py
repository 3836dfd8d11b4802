"""Events of the scheduler service."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from backhaul_contracts.envelope import Event, register
from backhaul_contracts.topics import SCHEDULER_EVENTS


class _SchedulerEvent(Event):
    topic = SCHEDULER_EVENTS


@register
class ScheduledEventCreated(_SchedulerEvent):
    event_type = "ScheduledEventCreated"

    scheduled_event_id: UUID
    account_id: int
    action: str
    run_at: datetime
    created_by: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    note: str | None = None
    vacation_id: UUID | None = Field(
        default=None, description="The vacation this event belongs to, if any"
    )
    warnings: list[str] = Field(
        default_factory=list, description="Why the event may fail at its time, as foreseen"
    )


@register
class ScheduledEventCompleted(_SchedulerEvent):
    event_type = "ScheduledEventCompleted"

    scheduled_event_id: UUID
    account_id: int
    action: str
    completed_at: datetime
    result: dict[str, Any] = Field(default_factory=dict)
    vacation_id: UUID | None = None


@register
class ScheduledEventFailed(_SchedulerEvent):
    event_type = "ScheduledEventFailed"

    scheduled_event_id: UUID
    account_id: int
    action: str
    failed_at: datetime
    reason: str
    code: str | None = Field(
        default=None,
        description="The owner's failure code (not_found, conflict, invalid) or no_answer",
    )
    vacation_id: UUID | None = None


@register
class ScheduledEventCancelled(_SchedulerEvent):
    event_type = "ScheduledEventCancelled"

    scheduled_event_id: UUID
    account_id: int
    action: str
    run_at: datetime
    cancelled_at: datetime
    cancelled_by: str
    vacation_id: UUID | None = None
