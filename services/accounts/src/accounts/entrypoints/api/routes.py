"""The accounts HTTP API. Thin: parse, call one handler, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from accounts.adapters.tables import Disconnection
from accounts.domain.rules import StepState, disconnect_progress
from accounts.entrypoints.api.deps import ActorDep, UnitOfWorkDep
from accounts.entrypoints.api.schemas import (
    AccountIn,
    AccountOut,
    AccountPage,
    AccountTypeIn,
    AccountTypeOut,
    AddressOut,
    ContactOut,
    DisconnectIn,
    DisconnectionOut,
    LogOut,
    SettingsIn,
    SettingsOut,
    StatusChangeIn,
    StatusIn,
    StatusOut,
    StepOut,
)
from accounts.service_layer import handlers, queries

router = APIRouter()


def _account_out(account: handlers.Account) -> AccountOut:
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
    created = await handlers.create_status(
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
    return AccountTypeOut.model_validate(await handlers.create_account_type(uow, body.name))


@router.post("/accounts", response_model=AccountOut, status_code=201, tags=["accounts"])
async def create_account(
    body: AccountIn, uow: UnitOfWorkDep, actor: ActorDep, response: Response
) -> AccountOut:
    """Create an account, with an automatic or a specified id."""
    command = handlers.CreateAccount(
        id=body.id,
        name=body.name,
        status_id=body.status_id,
        account_type_id=body.account_type_id,
        parent_account_id=body.parent_account_id,
        billing_day=body.billing_day,
        serviceable_address=(
            handlers.NewAddress(**body.serviceable_address.model_dump())
            if body.serviceable_address
            else None
        ),
        mailing_address=body.mailing_address.model_dump() if body.mailing_address else None,
        primary_contact=(
            handlers.NewContact(**body.primary_contact.model_dump())
            if body.primary_contact
            else None
        ),
        custom_fields=body.custom_fields,
    )
    account = await handlers.create_account(uow, command, actor=actor)
    response.headers["Location"] = f"/accounts/{account.id}"
    return _account_out(account)


@router.get("/accounts", response_model=AccountPage, tags=["accounts"])
async def list_accounts(
    uow: UnitOfWorkDep,
    status_id: int | None = None,
    account_type_id: int | None = None,
    activates: Annotated[
        bool | None, Query(description="Only accounts whose status activates (or not)")
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text search on the name")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AccountPage:
    """Accounts, filtered and paginated."""
    accounts, total = await queries.list_accounts(
        uow,
        status_id=status_id,
        account_type_id=account_type_id,
        activates=activates,
        q=q,
        limit=limit,
        offset=offset,
    )
    return AccountPage(
        items=[_account_out(a) for a in accounts], total=total, limit=limit, offset=offset
    )


@router.get("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
async def get_account(account_id: int, uow: UnitOfWorkDep) -> AccountOut:
    """One account with its status, address and contacts."""
    return _account_out(await handlers.load_account(uow, account_id))


@router.post("/accounts/{account_id}/status", response_model=AccountOut, tags=["accounts"])
async def change_account_status(
    account_id: int, body: StatusChangeIn, uow: UnitOfWorkDep, actor: ActorDep
) -> AccountOut:
    """Move the account to another status; the same status is a no-op with no event."""
    account, _ = await handlers.change_status(
        uow, account_id, body.status_id, actor=actor, reason=body.reason
    )
    return _account_out(await handlers.load_account(uow, account.id))


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
    disconnection = await handlers.disconnect(
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
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[LogOut]:
    """The account's action history, newest first, optionally of one action."""
    return [
        LogOut.model_validate(entry)
        for entry in await queries.list_logs(uow, account_id, action=action, limit=limit)
    ]


@router.get("/settings", response_model=SettingsOut, tags=["settings"])
async def get_settings(uow: UnitOfWorkDep) -> SettingsOut:
    """Account settings: the status a disconnect moves an account to."""
    return SettingsOut(
        disconnect_status=StatusOut.model_validate(await handlers.get_disconnect_status(uow))
    )


@router.put("/settings", response_model=SettingsOut, tags=["settings"])
async def put_settings(body: SettingsIn, uow: UnitOfWorkDep, actor: ActorDep) -> SettingsOut:
    """Change the disconnect status."""
    chosen = await handlers.set_disconnect_status(uow, body.disconnect_status_id, actor=actor)
    return SettingsOut(disconnect_status=StatusOut.model_validate(chosen))
