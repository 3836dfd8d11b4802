"""The notifications HTTP API. Thin: parse, call one handler, shape the answer."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from backhaul_kit.deps import UnitOfWorkDep
from notifications.adapters.tables import Email
from notifications.domain.delivery import EmailState
from notifications.entrypoints.api.schemas import (
    ContactOut,
    EmailOut,
    PreviewIn,
    PreviewOut,
    TriggerIn,
    TriggerOut,
    TriggerPatch,
)
from notifications.service_layer import handlers, queries

router = APIRouter()


def _email_out(email: Email, *, include_body: bool) -> EmailOut:
    out = EmailOut.model_validate(email)
    return out if include_body else out.model_copy(update={"body": None})


@router.get("/triggers", response_model=list[TriggerOut], tags=["triggers"])
async def list_triggers(
    uow: UnitOfWorkDep,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
) -> list[TriggerOut]:
    """Every trigger, shipped and custom, optionally for one event type."""
    return [
        TriggerOut.model_validate(t)
        for t in await queries.list_triggers(uow, event_type=event_type)
    ]


@router.post("/triggers", response_model=TriggerOut, status_code=201, tags=["triggers"])
async def create_trigger(body: TriggerIn, uow: UnitOfWorkDep, response: Response) -> TriggerOut:
    """Add a trigger. Its event type, conditions and templates are checked now (422 naming
    what is wrong), not when a customer's email would be rendered."""
    trigger = await handlers.create_trigger(
        uow,
        handlers.TriggerSpec(
            name=body.name,
            event_type=body.event_type,
            conditions=body.conditions,
            audience=body.audience,
            category=body.category,
            subject_template=body.subject_template,
            body_template=body.body_template,
            enabled=body.enabled,
            address=body.address,
        ),
    )
    response.headers["Location"] = f"/triggers/{trigger.id}"
    return TriggerOut.model_validate(trigger)


@router.get("/triggers/{trigger_id}", response_model=TriggerOut, tags=["triggers"])
async def get_trigger(trigger_id: int, uow: UnitOfWorkDep) -> TriggerOut:
    """One trigger."""
    return TriggerOut.model_validate(await queries.get_trigger(uow, trigger_id))


@router.patch("/triggers/{trigger_id}", response_model=TriggerOut, tags=["triggers"])
async def update_trigger(trigger_id: int, body: TriggerPatch, uow: UnitOfWorkDep) -> TriggerOut:
    """Change a trigger (shipped ones too: disable, reword); checked like a new one."""
    changes = {
        key: value
        for key, value in body.model_dump(exclude_unset=True).items()
        # A null category or address clears it; for other fields null means "unchanged".
        if value is not None or key in ("category", "address")
    }
    return TriggerOut.model_validate(await handlers.update_trigger(uow, trigger_id, changes))


@router.post("/triggers/{trigger_id}/preview", response_model=PreviewOut, tags=["triggers"])
async def preview_trigger(trigger_id: int, body: PreviewIn, uow: UnitOfWorkDep) -> PreviewOut:
    """Render a trigger's subject and body for a sample event; nothing is queued or sent."""
    preview = await handlers.preview_trigger(
        uow,
        trigger_id,
        payload=body.event,
        account={
            "id": body.account_id,
            "name": body.account_name,
            "parent_account_id": body.parent_account_id,
        },
        contact={"name": body.contact_name, "email": body.contact_email},
    )
    return PreviewOut(subject=preview.subject, body=preview.body, matches=preview.matches)


@router.delete("/triggers/{trigger_id}", status_code=204, tags=["triggers"])
async def delete_trigger(trigger_id: int, uow: UnitOfWorkDep) -> Response:
    """Delete a trigger; the email it already sent stays in the log."""
    await handlers.delete_trigger(uow, trigger_id)
    return Response(status_code=204)


@router.get("/accounts/{account_id}/emails", response_model=list[EmailOut], tags=["emails"])
async def list_account_emails(
    account_id: int,
    uow: UnitOfWorkDep,
    state: EmailState | None = None,
    include_body: Annotated[bool, Query(description="Include each email's body")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[EmailOut]:
    """The account's correspondence: subject, recipient, state (queued, sent, rejected,
    invalid), reject reason and times; bodies only when asked for."""
    emails = await queries.list_emails(uow, account_id, state=state, limit=limit, offset=offset)
    return [_email_out(e, include_body=include_body) for e in emails]


@router.get("/emails", response_model=list[EmailOut], tags=["emails"])
async def list_emails(
    uow: UnitOfWorkDep,
    state: EmailState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[EmailOut]:
    """All accounts' email, newest first (e.g. `?state=queued` to see what is waiting)."""
    emails = await queries.list_all_emails(uow, state=state, limit=limit, offset=offset)
    return [_email_out(e, include_body=False) for e in emails]


@router.get("/emails/{email_id}", response_model=EmailOut, tags=["emails"])
async def get_email(email_id: UUID, uow: UnitOfWorkDep) -> EmailOut:
    """One email with its body, as it was sent."""
    return _email_out(await queries.get_email(uow, email_id), include_body=True)


@router.get("/accounts/{account_id}/contacts", response_model=list[ContactOut], tags=["emails"])
async def list_account_contacts(account_id: int, uow: UnitOfWorkDep) -> list[ContactOut]:
    """Who notifications would write to for this account, and the message categories each
    contact chose, as replicated from accounts' events."""
    return [ContactOut.model_validate(c) for c in await queries.account_contacts(uow, account_id)]
