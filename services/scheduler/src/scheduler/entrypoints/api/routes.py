"""The scheduler HTTP API. Thin: parse, call one handler, shape the answer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from backhaul_kit.deps import ActorDep, UnitOfWorkDep
from scheduler.adapters.tables import ScheduledEvent, Vacation
from scheduler.domain.rules import Action, State, vacation_state
from scheduler.entrypoints.api.schemas import (
    ScheduledEventIn,
    ScheduledEventOut,
    ScheduledEventPage,
    ScheduledEventPatch,
    VacationIn,
    VacationOut,
    VacationPatch,
)
from scheduler.service_layer import queries, scheduled_events, vacations

router = APIRouter()


def _vacation_out(vacation: Vacation, rows: Sequence[ScheduledEvent]) -> VacationOut:
    events = [ScheduledEventOut.model_validate(r) for r in rows]
    return VacationOut(
        id=vacation.id,
        account_id=vacation.account_id,
        state=vacation_state([e.state for e in events]),
        leave_at=vacation.leave_at,
        return_at=vacation.return_at,
        time_zone=vacation.time_zone,
        vacation_status_id=vacation.vacation_status_id,
        vacation_service_id=vacation.vacation_service_id,
        normal_status_id=vacation.normal_status_id,
        normal_service_id=vacation.normal_service_id,
        note=vacation.note,
        created_by=vacation.created_by,
        created_at=vacation.created_at,
        cancelled_at=vacation.cancelled_at,
        warnings=[w for e in events for w in e.warnings],
        events=events,
    )


@router.post(
    "/scheduled-events",
    response_model=ScheduledEventOut,
    status_code=201,
    tags=["scheduled events"],
)
async def create_scheduled_event(
    body: ScheduledEventIn, uow: UnitOfWorkDep, actor: ActorDep
) -> ScheduledEventOut:
    """Schedule a disconnect, status change, service addition or removal on an account.

    An account the scheduler has not heard of is a 404. A status to move to, or a service to
    add, that is not in accounts' or billing's catalogue (as their events told the scheduler)
    is a 422 naming it; nothing is created. The answer carries `warnings` when the event can
    already be seen to fail at its time.
    """
    row = await scheduled_events.schedule(
        uow,
        scheduled_events.Schedule(
            account_id=body.account_id,
            action=body.action,
            run_at=body.run_at,
            time_zone=body.time_zone,
            parameters=body.parameters,
            note=body.note,
        ),
        actor=actor,
    )
    return ScheduledEventOut.model_validate(row)


@router.get("/scheduled-events", response_model=ScheduledEventPage, tags=["scheduled events"])
async def list_scheduled_events(
    uow: UnitOfWorkDep,
    account_id: Annotated[int | None, Query(ge=1)] = None,
    state: State | None = None,
    action: Action | None = None,
    vacation_id: UUID | None = None,
    run_from: Annotated[
        datetime | None, Query(alias="from", description="run_at at or after (UTC if no offset)")
    ] = None,
    run_to: Annotated[
        datetime | None, Query(alias="to", description="run_at before (UTC if no offset)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ScheduledEventPage:
    """Scheduled events, soonest first, by account, state, action, vacation and time window."""
    rows, total = await queries.list_scheduled_events(
        uow,
        account_id=account_id,
        state=state,
        action=action,
        vacation_id=vacation_id,
        run_from=_utc(run_from),
        run_to=_utc(run_to),
        limit=limit,
        offset=offset,
    )
    return ScheduledEventPage(
        items=[ScheduledEventOut.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get(
    "/scheduled-events/{event_id}", response_model=ScheduledEventOut, tags=["scheduled events"]
)
async def get_scheduled_event(event_id: UUID, uow: UnitOfWorkDep) -> ScheduledEventOut:
    """One scheduled event: its state, the command it sent, and its outcome or failure."""
    return ScheduledEventOut.model_validate(await queries.scheduled_event(uow, event_id))


@router.patch(
    "/scheduled-events/{event_id}", response_model=ScheduledEventOut, tags=["scheduled events"]
)
async def edit_scheduled_event(
    event_id: UUID, body: ScheduledEventPatch, uow: UnitOfWorkDep, actor: ActorDep
) -> ScheduledEventOut:
    """Change a pending event's time, parameters or note; 409 once it has fired.

    New parameters are checked like a new event's: an unknown status or service is a 422.
    """
    row = await scheduled_events.reschedule(
        uow,
        event_id,
        scheduled_events.Reschedule(
            run_at=body.run_at,
            time_zone=body.time_zone,
            parameters=body.parameters,
            note=body.note,
        ),
        actor=actor,
    )
    return ScheduledEventOut.model_validate(row)


@router.post(
    "/scheduled-events/{event_id}/cancel",
    response_model=ScheduledEventOut,
    tags=["scheduled events"],
)
@router.delete(
    "/scheduled-events/{event_id}",
    response_model=ScheduledEventOut,
    tags=["scheduled events"],
    description="Deleting a pending event cancels it: it stays in the history, as cancelled.",
)
async def cancel_scheduled_event(
    event_id: UUID, uow: UnitOfWorkDep, actor: ActorDep
) -> ScheduledEventOut:
    """Cancel a pending event (kept, as cancelled); 409 once it has fired."""
    return ScheduledEventOut.model_validate(
        await scheduled_events.cancel(uow, event_id, actor=actor)
    )


@router.post("/vacations", response_model=VacationOut, status_code=201, tags=["vacations"])
async def create_vacation(body: VacationIn, uow: UnitOfWorkDep, actor: ActorDep) -> VacationOut:
    """Plan a vacation: the linked status and data-service changes on leaving and returning.

    Every status and service it names must be in accounts' and billing's catalogue: an
    unknown one is a 422 naming it, and nothing is created.
    """
    vacation, rows = await vacations.plan_vacation(
        uow,
        vacations.PlanVacation(
            account_id=body.account_id,
            leave_at=body.leave_at,
            return_at=body.return_at,
            time_zone=body.time_zone,
            vacation_status_id=body.vacation_status_id,
            vacation_service_id=body.vacation_service_id,
            normal_status_id=body.normal_status_id,
            normal_service_id=body.normal_service_id,
            note=body.note,
        ),
        actor=actor,
    )
    return _vacation_out(vacation, rows)


@router.get("/vacations", response_model=list[VacationOut], tags=["vacations"])
async def list_vacations(
    uow: UnitOfWorkDep, account_id: Annotated[int | None, Query(ge=1)] = None
) -> list[VacationOut]:
    """Vacations, each shown as one with its linked events."""
    return [
        _vacation_out(v, rows)
        for v, rows in await queries.list_vacations(uow, account_id=account_id)
    ]


@router.get("/vacations/{vacation_id}", response_model=VacationOut, tags=["vacations"])
async def get_vacation(vacation_id: UUID, uow: UnitOfWorkDep) -> VacationOut:
    """One vacation, its state and its linked events."""
    return _vacation_out(*await queries.vacation(uow, vacation_id))


@router.patch("/vacations/{vacation_id}", response_model=VacationOut, tags=["vacations"])
async def edit_vacation(
    vacation_id: UUID, body: VacationPatch, uow: UnitOfWorkDep, actor: ActorDep
) -> VacationOut:
    """Move the leave or return date while that date's events are still pending; 409 after."""
    change = vacations.ReplanVacation(
        leave_at=body.leave_at, return_at=body.return_at, time_zone=body.time_zone
    )
    return _vacation_out(*await vacations.replan_vacation(uow, vacation_id, change, actor=actor))


@router.post("/vacations/{vacation_id}/cancel", response_model=VacationOut, tags=["vacations"])
@router.delete(
    "/vacations/{vacation_id}",
    response_model=VacationOut,
    tags=["vacations"],
    description="Deleting a vacation cancels it as one; it stays in the history.",
)
async def cancel_vacation(vacation_id: UUID, uow: UnitOfWorkDep, actor: ActorDep) -> VacationOut:
    """Cancel a vacation as one, while none of its events has fired; 409 after."""
    return _vacation_out(*await vacations.cancel_vacation(uow, vacation_id, actor=actor))
