"""Rules of scheduled events (seeds 002, 003, 004): actions, states, times and foresight.

Pure functions: every one that depends on the time takes `now`, so tests control the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backhaul_contracts.common import Proration, ServiceKind
from backhaul_kit.errors import Conflict, InvalidInput

NO_ANSWER = "no_answer"


class Action(StrEnum):
    """What a scheduled event does at its time, and which service owns the command."""

    DISCONNECT = "disconnect"
    CHANGE_STATUS = "change_status"
    ADD_SERVICE = "add_service"
    REMOVE_SERVICE = "remove_service"


class State(StrEnum):
    PENDING = "pending"  # waiting for its time; the only state that can be edited or cancelled
    DISPATCHED = "dispatched"  # its command is on the owner's command topic
    COMPLETED = "completed"  # the owner answered CommandSucceeded
    FAILED = "failed"  # the owner answered CommandFailed, or did not answer in time
    CANCELLED = "cancelled"


# -- parameters ----------------------------------------------------------------------------


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DisconnectParameters(_Parameters):
    proration: Proration = Proration.INHERIT


class ChangeStatusParameters(_Parameters):
    status_id: int = Field(ge=1)
    reason: str | None = Field(default=None, max_length=500)


class AddServiceParameters(_Parameters):
    service_id: int = Field(ge=1)
    quantity: int = Field(default=1, ge=1, le=10_000)
    price_override: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=4)


class RemoveServiceParameters(_Parameters):
    service_id: int = Field(ge=1)


Parameters = (
    DisconnectParameters | ChangeStatusParameters | AddServiceParameters | RemoveServiceParameters
)

PARAMETERS: dict[Action, type[_Parameters]] = {
    Action.DISCONNECT: DisconnectParameters,
    Action.CHANGE_STATUS: ChangeStatusParameters,
    Action.ADD_SERVICE: AddServiceParameters,
    Action.REMOVE_SERVICE: RemoveServiceParameters,
}


def parse_parameters(action: Action, raw: dict[str, Any]) -> Parameters:
    """The action's parameters, validated; a 422 names every wrong or missing field."""
    try:
        parsed = PARAMETERS[action].model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"parameters.{'.'.join(str(p) for p in e['loc']) or '?'}: {e['msg']}"
            for e in exc.errors()
        )
        raise InvalidInput(f"invalid parameters for {action.value}: {problems}") from None
    assert isinstance(
        parsed,
        DisconnectParameters
        | ChangeStatusParameters
        | AddServiceParameters
        | RemoveServiceParameters,
    )
    return parsed


def stored_parameters(parameters: Parameters) -> dict[str, Any]:
    """Parameters as kept on the row and in events: JSON, money as a decimal string."""
    return parameters.model_dump(mode="json")


# -- time ----------------------------------------------------------------------------------


def time_zone(name: str) -> ZoneInfo:
    """An IANA time zone by name (Europe/Paris, America/Chicago)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"time zone {name!r} is not a known IANA time zone name") from None


def resolve_run_at(value: datetime, zone_name: str | None) -> tuple[datetime, list[str]]:
    """The run time in UTC, and warnings about how it was read.

    An offset in the value wins; a value without one is read in `zone_name`. A local time
    that does not exist (skipped by a daylight-saving change) is refused rather than moved.
    """
    zone = time_zone(zone_name) if zone_name else None
    if value.tzinfo is not None:
        return value.astimezone(UTC), []
    if zone is None:
        return value.replace(tzinfo=UTC), [
            f"run_at {value.isoformat()} has no offset and no time_zone was given: read as UTC"
        ]
    local = value.replace(tzinfo=zone)
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != value:
        raise InvalidInput(
            f"run_at {value.isoformat()} does not exist in {zone_name} "
            "(it falls in a daylight-saving gap)"
        )
    return local.astimezone(UTC), []


def ensure_future(run_at: datetime, now: datetime) -> None:
    if run_at <= now:
        raise InvalidInput(f"run_at {run_at.isoformat()} is in the past (now is {now.isoformat()})")


def answer_overdue(dispatched_at: datetime, now: datetime, timeout: timedelta) -> bool:
    """No outcome arrived in time: the event fails with "no answer"."""
    return now - dispatched_at >= timeout


# -- states --------------------------------------------------------------------------------


def ensure_pending(state: State, event_id: object, doing: str) -> None:
    """Only a pending event can be edited or cancelled: once fired, it is history."""
    if state is not State.PENDING:
        raise Conflict(
            f"scheduled event {event_id} is {state.value}; only pending events can be {doing}"
        )


def accepts_answer(state: State, failure_code: str | None) -> bool:
    """A dispatched event takes its owner's answer; so does one given up as "no answer",
    because a late answer is still the truth about what happened."""
    return state is State.DISPATCHED or (state is State.FAILED and failure_code == NO_ANSWER)


# -- foresight: will it fail at its time? --------------------------------------------------


@dataclass(frozen=True)
class PlannedChange:
    """A service change already scheduled on the account before the one being created."""

    action: Action
    service_id: int


def foresee_disconnect(
    account_id: int, action: Action, disconnect_at: datetime | None
) -> list[str]:
    """Warn when a disconnect is already scheduled to run before this event."""
    if disconnect_at is None:
        return []
    when = disconnect_at.isoformat()
    if action is Action.DISCONNECT:
        return [
            f"account {account_id} is already scheduled to be disconnected at {when}; "
            "a second disconnect will fail"
        ]
    return [
        f"account {account_id} is scheduled to be disconnected at {when}, before this event: "
        "it will run on a disconnected account"
    ]


def foresee_children(account_id: int, children: Sequence[int]) -> list[str]:
    """Seed 004: a parent's disconnect does not disconnect its children; say which are left."""
    if not children:
        return []
    listed = ", ".join(str(c) for c in children)
    return [
        f"account {account_id} is a parent: its disconnect will not disconnect child account(s) "
        f"{listed}; schedule their disconnects too if they should go"
    ]


def services_at(present: Iterable[int], planned_before: Sequence[PlannedChange]) -> set[int]:
    """The account's services once the changes scheduled before have run."""
    services = set(present)
    for change in planned_before:
        if change.action is Action.REMOVE_SERVICE:
            services.discard(change.service_id)
        elif change.action is Action.ADD_SERVICE:
            services.add(change.service_id)
    return services


def foresee_failures(
    *,
    account_id: int,
    action: Action,
    parameters: Parameters,
    run_at: datetime,
    present: Iterable[int],
    planned_before: Sequence[PlannedChange],
    kinds: dict[int, ServiceKind],
    names: dict[int, str],
) -> list[str]:
    """Warnings for an event that can already be seen to fail at its time (seed 002: adding a
    data service while one is present fails).

    `present` are the account's services now, `planned_before` the service changes scheduled
    to run before, `kinds`/`names` what is known of catalogue services from billing's events.
    """
    if not isinstance(parameters, AddServiceParameters | RemoveServiceParameters):
        return []
    when = run_at.isoformat()
    services = services_at(present, planned_before)
    service_id = parameters.service_id

    def label(sid: int) -> str:
        return f"{names[sid]!r} ({sid})" if sid in names else f"{sid}"

    if action is Action.REMOVE_SERVICE:
        if service_id in services:
            return []
        return [
            f"service {label(service_id)} will not be on account {account_id} at {when}, "
            "so removing it will fail"
        ]
    data = sorted(s for s in services if kinds.get(s) is ServiceKind.DATA and s != service_id)
    kind = kinds.get(service_id)
    if not data or kind not in (ServiceKind.DATA, None):
        return []
    held = ", ".join(label(s) for s in data)
    if kind is ServiceKind.DATA:
        return [
            f"account {account_id} will still have data service {held} at {when} and no "
            f"removal is scheduled before, so adding data service {label(service_id)} will "
            "fail: schedule its removal first"
        ]
    return [
        f"account {account_id} will still have data service {held} at {when}; if service "
        f"{label(service_id)} is a data service, adding it will fail unless the other is "
        "removed first"
    ]


# -- vacations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedEvent:
    run_at: datetime
    sequence: int
    action: Action
    parameters: Parameters


def vacation_plan(
    *,
    leave_at: datetime,
    return_at: datetime,
    vacation_status_id: int,
    vacation_service_id: int,
    normal_status_id: int,
    normal_service_id: int | None,
    now: datetime,
) -> list[PlannedEvent]:
    """The linked events of a vacation (seed 002), in the order they must run.

    On each date: the status change, then the removal of the data service in place, then
    the addition of the other one (adding a data service while one is present fails).
    """
    ensure_future(leave_at, now)
    if return_at <= leave_at:
        raise InvalidInput(
            f"the return ({return_at.isoformat()}) must be after the leave ({leave_at.isoformat()})"
        )
    if vacation_status_id == normal_status_id:
        raise InvalidInput(f"the vacation status and the normal status are both {normal_status_id}")
    if vacation_service_id == normal_service_id:
        raise InvalidInput(
            f"the vacation service and the normal service are both {vacation_service_id}"
        )
    reason = "vacation"
    leave: list[tuple[Action, Parameters]] = [
        (Action.CHANGE_STATUS, ChangeStatusParameters(status_id=vacation_status_id, reason=reason))
    ]
    back: list[tuple[Action, Parameters]] = [
        (
            Action.CHANGE_STATUS,
            ChangeStatusParameters(status_id=normal_status_id, reason="back from vacation"),
        )
    ]
    if normal_service_id is not None:
        leave.append((Action.REMOVE_SERVICE, RemoveServiceParameters(service_id=normal_service_id)))
    leave.append((Action.ADD_SERVICE, AddServiceParameters(service_id=vacation_service_id)))
    back.append((Action.REMOVE_SERVICE, RemoveServiceParameters(service_id=vacation_service_id)))
    if normal_service_id is not None:
        back.append((Action.ADD_SERVICE, AddServiceParameters(service_id=normal_service_id)))
    return [
        PlannedEvent(at, sequence, action, parameters)
        for at, steps in ((leave_at, leave), (return_at, back))
        for sequence, (action, parameters) in enumerate(steps)
    ]


class VacationState(StrEnum):
    SCHEDULED = "scheduled"  # nothing has run yet
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


def vacation_state(states: Sequence[State]) -> VacationState:
    """A vacation is shown as one: its state follows from its events'."""
    if all(s is State.CANCELLED for s in states):
        return VacationState.CANCELLED
    if any(s is State.FAILED for s in states):
        return VacationState.FAILED
    if all(s is State.COMPLETED for s in states):
        return VacationState.COMPLETED
    if all(s is State.PENDING for s in states):
        return VacationState.SCHEDULED
    return VacationState.IN_PROGRESS
