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


@register
class ScheduledEventCompleted(_SchedulerEvent):
    event_type = "ScheduledEventCompleted"

    scheduled_event_id: UUID
    account_id: int
    action: str
    completed_at: datetime
    result: dict[str, Any] = Field(default_factory=dict)


@register
class ScheduledEventFailed(_SchedulerEvent):
    event_type = "ScheduledEventFailed"

    scheduled_event_id: UUID
    account_id: int
    action: str
    failed_at: datetime
    reason: str
