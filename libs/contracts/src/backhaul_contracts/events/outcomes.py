"""Outcome events: how the owner of a command answers it.

They are published on the answering service's own events topic (accounts.events.v1 for
accounts' commands, billing.events.v1 for billing's) and name the command in the envelope's
causation_id, so the scheduler can close the scheduled event that sent it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from backhaul_contracts.envelope import Event, register


class FailureCode(StrEnum):
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INVALID = "invalid"


@register
class CommandSucceeded(Event):
    event_type = "CommandSucceeded"
    topic = ""  # the answering service's events topic

    account_id: int
    command_type: str
    result: dict[str, Any] = Field(
        default_factory=dict, description="Ids of what the command produced"
    )


@register
class CommandFailed(Event):
    event_type = "CommandFailed"
    topic = ""  # the answering service's events topic

    account_id: int
    command_type: str
    reason: str
    code: FailureCode
