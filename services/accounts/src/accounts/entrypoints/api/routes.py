"""The accounts HTTP API. Thin: parse, call one handler, shape the answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from accounts.adapters.tables import Account, Disconnection
from accounts.domain.rules import StepState, disconnect_progress, groups_label
from accounts.entrypoints.api.schemas import (
    AccountIn,
    AccountOut,
    AccountPage,
    AccountPatch,
    AccountTypeIn,
    AccountTypeOut,
    AddressOut,
    ContactCreate,
    ContactOut,
    ContactPatch,
    DisconnectIn,
    DisconnectionOut,
    GroupIn,
    GroupOut,
    LogOut,
    NoteIn,
    NoteOut,
    SettingsIn,
    SettingsOut,
    StatusChangeIn,
    StatusIn,
    StatusOut,
    StatusPatch,
    StepOut,
    TaskIn,
    TaskOut,
    TaskPatch,
)
from accounts.service_layer import (
    account_types,
    accounts,
    contacts,
    disconnections,
    notes,
    queries,
    relations,
    settings,
    statuses,
)
from backhaul_kit.deps import ActorDep, UnitOfWorkDep

router = APIRouter()


def _account_out(account: Account) -> AccountOut:
    address = account.serviceable_address
    return AccountOut(
        id=account.id,
        name=account.name,
        status=StatusOut.model_validate(account.status),
        account_type=AccountTypeOut.model_validate(account.account_type)
        if account.account_type
        else None,
        parent_account_id=account.parent_id,
        billing_day=account.billing_day,
        serviceable_address=AddressOut.model_validate(address) if address else None,
        mailing_address=account.mailing_address,
        custom_fields=account.custom_fields or {},
        groups=[GroupOut.model_validate(g) for g in account.groups],
        groups_label=groups_label([g.name for g in account.groups]),
        contacts=[ContactOut.model_validate(c) for c in account.contacts],
        created_at=account.created_at,
        activated_at=account.activated_at,
        disconnected_at=account.disconnected_at,
    )


def _disconnection_out(d: Disconnection) -> DisconnectionOut:
    return DisconnectionOut(
        id=d.id,
        account_id=d.account_id,
        disconnected_at=d.disconnected_at,
        disconnected_by=d.disconnected_by,
        address=d.address,
        previous_status_id=d.previous_status_id,
        status_id=d.status_id,
        proration=d.proration,
        progress=disconnect_progress([StepState(s.state) for s in d.steps]),
        steps=[StepOut.model_validate(s) for s in d.steps],
    )


@router.get("/account-statuses", response_model=list[StatusOut], tags=["account statuses"])
async def list_account_statuses(uow: UnitOfWorkDep) -> list[StatusOut]:
    """Every account status: the defaults (Lead, Active, Inactive) and custom ones."""
    return [StatusOut.model_validate(s) for s in await queries.list_statuses(uow)]


@router.post(
    "/account-statuses", response_model=StatusOut, status_code=201, tags=["account statuses"]
)
async def create_account_status(body: StatusIn, uow: UnitOfWorkDep) -> StatusOut:
    """Add a custom status with its activates-account flag, icon and colour."""
    created = await statuses.create_status(
        uow,
        name=body.name,
        activates_account=body.activates_account,
        icon=body.icon,
        colour=body.colour,
    )
    return StatusOut.model_validate(created)


@router.get("/account-types", response_model=list[AccountTypeOut], tags=["account types"])
async def list_account_types(uow: UnitOfWorkDep) -> list[AccountTypeOut]:
    """Every account type."""
    return [AccountTypeOut.model_validate(t) for t in await queries.list_account_types(uow)]


@router.post(
    "/account-types", response_model=AccountTypeOut, status_code=201, tags=["account types"]
)
async def create_account_type(body: AccountTypeIn, uow: UnitOfWorkDep) -> AccountTypeOut:
    """Add an account type (names are unique)."""
    return AccountTypeOut.model_validate(await account_types.create_account_type(uow, body.name))


@router.post("/accounts", response_model=AccountOut, status_code=201, tags=["accounts"])
async def create_account(
    body: AccountIn, uow: UnitOfWorkDep, actor: ActorDep, response: Response
) -> AccountOut:
    """Create an account, with an automatic or a specified id."""
    command = accounts.CreateAccount(
        id=body.id,
        name=body.name,
        status_id=body.status_id,
        account_type_id=body.account_type_id,
        parent_account_id=body.parent_account_id,
        billing_day=body.billing_day,
        serviceable_address=(
            accounts.NewAddress(**body.serviceable_address.model_dump())
            if body.serviceable_address
            else None
        ),
        mailing_address=body.mailing_address.model_dump() if body.mailing_address else None,
        primary_contact=(
            accounts.NewContact(**body.primary_contact.model_dump())
            if body.primary_contact
            else None
        ),
        custom_fields=body.custom_fields,
        group_ids=body.group_ids,
    )
    account = await accounts.create_account(uow, command, actor=actor)
    response.headers["Location"] = f"/accounts/{account.id}"
    return _account_out(account)


@router.get("/accounts", response_model=AccountPage, tags=["accounts"])
async def list_accounts(
    uow: UnitOfWorkDep,
    status_id: int | None = None,
    account_type_id: int | None = None,
    group_id: int | None = None,
    activates: Annotated[
        bool | None, Query(description="Only accounts whose status activates (or not)")
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text search on the name")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AccountPage:
    """Accounts, filtered and paginated."""
    rows, total = await queries.list_accounts(
        uow,
        status_id=status_id,
        account_type_id=account_type_id,
        group_id=group_id,
        activates=activates,
        q=q,
        limit=limit,
        offset=offset,
    )
    return AccountPage(
        items=[_account_out(a) for a in rows], total=total, limit=limit, offset=offset
    )


@router.get("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
async def get_account(account_id: int, uow: UnitOfWorkDep) -> AccountOut:
    """One account with its status, address and contacts."""
    return _account_out(await accounts.load_account(uow, account_id))


@router.post("/accounts/{account_id}/status", response_model=AccountOut, tags=["accounts"])
async def change_account_status(
    account_id: int, body: StatusChangeIn, uow: UnitOfWorkDep, actor: ActorDep
) -> AccountOut:
    """Move the account to another status; the same status is a no-op with no event."""
    account, _ = await accounts.change_status(
        uow, account_id, body.status_id, actor=actor, reason=body.reason
    )
    return _account_out(account)  # as changed: every relation is loaded, no read back


@router.post(
    "/accounts/{account_id}/disconnect",
    response_model=DisconnectionOut,
    status_code=status.HTTP_201_CREATED,
    tags=["disconnections"],
)
async def disconnect_account(
    account_id: int, uow: UnitOfWorkDep, actor: ActorDep, body: DisconnectIn | None = None
) -> DisconnectionOut:
    """Disconnect the account (it is never deleted); the fan-out follows asynchronously.

    The answer is the disconnection with its steps pending; follow them at
    `GET /accounts/{id}/disconnections`.
    """
    body = body or DisconnectIn()
    disconnection = await disconnections.disconnect(
        uow, account_id, actor=actor, proration=body.proration
    )
    return _disconnection_out(disconnection)


@router.get(
    "/accounts/{account_id}/disconnections",
    response_model=list[DisconnectionOut],
    tags=["disconnections"],
)
async def list_disconnections(account_id: int, uow: UnitOfWorkDep) -> list[DisconnectionOut]:
    """The disconnection log, newest first, each with every fan-out step's state."""
    return [_disconnection_out(d) for d in await queries.list_disconnections(uow, account_id)]


@router.get("/accounts/{account_id}/logs", response_model=list[LogOut], tags=["accounts"])
async def list_logs(
    account_id: int,
    uow: UnitOfWorkDep,
    action: Annotated[str | None, Query(max_length=60)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[LogOut]:
    """The account's action history, newest first, filtered by action, actor and time."""
    entries = await queries.list_logs(
        uow, account_id, action=action, actor=actor, since=since, until=until, limit=limit
    )
    return [LogOut.model_validate(entry) for entry in entries]


@router.get("/settings", response_model=SettingsOut, tags=["settings"])
async def get_settings(uow: UnitOfWorkDep) -> SettingsOut:
    """Account settings: the status a disconnect moves an account to."""
    return SettingsOut(
        disconnect_status=StatusOut.model_validate(await settings.get_disconnect_status(uow))
    )


@router.put("/settings", response_model=SettingsOut, tags=["settings"])
async def put_settings(body: SettingsIn, uow: UnitOfWorkDep, actor: ActorDep) -> SettingsOut:
    """Change the disconnect status."""
    chosen = await settings.set_disconnect_status(uow, body.disconnect_status_id, actor=actor)
    return SettingsOut(disconnect_status=StatusOut.model_validate(chosen))


@router.patch("/account-statuses/{status_id}", response_model=StatusOut, tags=["account statuses"])
async def update_account_status(status_id: int, body: StatusPatch, uow: UnitOfWorkDep) -> StatusOut:
    """Rename, re-icon or recolour a status (defaults too); a default's flag is fixed."""
    updated = await statuses.update_status(uow, status_id, **body.model_dump(exclude_unset=True))
    return StatusOut.model_validate(updated)


@router.delete("/account-statuses/{status_id}", status_code=204, tags=["account statuses"])
async def delete_account_status(status_id: int, uow: UnitOfWorkDep) -> Response:
    """Delete a custom status that no account uses; the defaults cannot be deleted."""
    await statuses.delete_status(uow, status_id)
    return Response(status_code=204)


@router.post(
    "/account-statuses/suggested",
    response_model=list[StatusOut],
    tags=["account statuses"],
    summary="Install the common custom statuses of the seed documents",
)
async def install_suggested_statuses(uow: UnitOfWorkDep) -> list[StatusOut]:
    """Adds Pending Install, Collections, Failed Install, the two termination statuses (with
    and without win-back potential) and Vacation, where missing; returns what it added."""
    return [StatusOut.model_validate(s) for s in await statuses.install_suggested_statuses(uow)]


@router.get("/account-groups", response_model=list[GroupOut], tags=["account groups"])
async def list_account_groups(uow: UnitOfWorkDep) -> list[GroupOut]:
    """Every account group."""
    return [GroupOut.model_validate(g) for g in await relations.list_groups(uow)]


@router.post("/account-groups", response_model=GroupOut, status_code=201, tags=["account groups"])
async def create_account_group(body: GroupIn, uow: UnitOfWorkDep) -> GroupOut:
    """Add an account group (names are unique); an account can be in several."""
    return GroupOut.model_validate(await relations.create_group(uow, body.name))


@router.patch("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
async def update_account(
    account_id: int, body: AccountPatch, uow: UnitOfWorkDep, actor: ActorDep
) -> AccountOut:
    """Edit details, groups, parent (no cycles) or serviceable address; emits AccountUpdated."""
    fields = body.model_dump(exclude_unset=True)
    if "serviceable_address" in fields:
        address = body.serviceable_address
        fields["serviceable_address"] = (
            accounts.NewAddress(**address.model_dump()) if address is not None else None
        )
    await relations.update_account(uow, account_id, fields, actor=actor)
    return _account_out(await accounts.load_account(uow, account_id))


@router.get("/accounts/{account_id}/children", response_model=list[AccountOut], tags=["accounts"])
async def list_children(account_id: int, uow: UnitOfWorkDep) -> list[AccountOut]:
    """The account's child accounts."""
    return [_account_out(a) for a in await relations.children(uow, account_id)]


@router.get("/accounts/{account_id}/contacts", response_model=list[ContactOut], tags=["contacts"])
async def list_contacts(account_id: int, uow: UnitOfWorkDep) -> list[ContactOut]:
    """The account's contacts; exactly one is primary."""
    account = await accounts.load_account(uow, account_id)
    return [ContactOut.model_validate(c) for c in account.contacts]


@router.post(
    "/accounts/{account_id}/contacts",
    response_model=ContactOut,
    status_code=201,
    tags=["contacts"],
)
async def add_contact(
    account_id: int, body: ContactCreate, uow: UnitOfWorkDep, actor: ActorDep
) -> ContactOut:
    """Add a contact with its message categories; the first contact becomes primary."""
    fields = body.model_dump(exclude={"primary"})
    contact = await contacts.add_contact(uow, account_id, fields, primary=body.primary, actor=actor)
    return ContactOut.model_validate(contact)


@router.patch(
    "/accounts/{account_id}/contacts/{contact_id}", response_model=ContactOut, tags=["contacts"]
)
async def update_contact(
    account_id: int, contact_id: int, body: ContactPatch, uow: UnitOfWorkDep, actor: ActorDep
) -> ContactOut:
    """Edit a contact's name, email, phone or message categories."""
    fields = body.model_dump(exclude_unset=True)
    contact = await contacts.update_contact(uow, account_id, contact_id, fields, actor=actor)
    return ContactOut.model_validate(contact)


@router.post(
    "/accounts/{account_id}/contacts/{contact_id}/primary",
    response_model=ContactOut,
    tags=["contacts"],
)
async def make_primary_contact(
    account_id: int, contact_id: int, uow: UnitOfWorkDep, actor: ActorDep
) -> ContactOut:
    """Make this contact the primary one (the flag moves; there is always exactly one)."""
    contact = await contacts.make_primary(uow, account_id, contact_id, actor=actor)
    return ContactOut.model_validate(contact)


@router.delete("/accounts/{account_id}/contacts/{contact_id}", status_code=204, tags=["contacts"])
async def remove_contact(
    account_id: int, contact_id: int, uow: UnitOfWorkDep, actor: ActorDep
) -> Response:
    """Remove a contact that is not the primary one."""
    await contacts.remove_contact(uow, account_id, contact_id, actor=actor)
    return Response(status_code=204)


@router.get("/accounts/{account_id}/notes", response_model=list[NoteOut], tags=["notes and tasks"])
async def list_notes(account_id: int, uow: UnitOfWorkDep) -> list[NoteOut]:
    """The account's notes, newest first."""
    return [NoteOut.model_validate(n) for n in await notes.list_notes(uow, account_id)]


@router.post(
    "/accounts/{account_id}/notes",
    response_model=NoteOut,
    status_code=201,
    tags=["notes and tasks"],
)
async def add_note(account_id: int, body: NoteIn, uow: UnitOfWorkDep, actor: ActorDep) -> NoteOut:
    """Add a note; its author is the acting user."""
    return NoteOut.model_validate(await notes.add_note(uow, account_id, body.body, actor=actor))


@router.get("/accounts/{account_id}/tasks", response_model=list[TaskOut], tags=["notes and tasks"])
async def list_tasks(
    account_id: int, uow: UnitOfWorkDep, completed: bool | None = None
) -> list[TaskOut]:
    """The account's tasks, optionally only (in)complete ones."""
    return [TaskOut.model_validate(t) for t in await notes.list_tasks(uow, account_id, completed)]


@router.post(
    "/accounts/{account_id}/tasks",
    response_model=TaskOut,
    status_code=201,
    tags=["notes and tasks"],
)
async def add_task(account_id: int, body: TaskIn, uow: UnitOfWorkDep, actor: ActorDep) -> TaskOut:
    """Add a task, optionally assigned to someone and due at a time."""
    task = await notes.add_task(uow, account_id, **body.model_dump(), actor=actor)
    return TaskOut.model_validate(task)


@router.patch(
    "/accounts/{account_id}/tasks/{task_id}", response_model=TaskOut, tags=["notes and tasks"]
)
async def update_task(
    account_id: int, task_id: int, body: TaskPatch, uow: UnitOfWorkDep, actor: ActorDep
) -> TaskOut:
    """Complete, reopen or reassign a task."""
    sent = body.model_dump(exclude_unset=True)
    task = await notes.update_task(
        uow,
        account_id,
        task_id,
        completed=sent.get("completed"),
        assignee=sent.get("assignee"),
        assign="assignee" in sent,
        actor=actor,
    )
    return TaskOut.model_validate(task)
