"""The provisioning HTTP API. Thin: parse, call one handler, shape the answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import PlainTextResponse

from backhaul_kit.deps import ActorDep, UnitOfWorkDep
from backhaul_kit.errors import InvalidInput
from provisioning.adapters.tables import AddressList, AddressListChange, AddressListEntry
from provisioning.domain.rules import routeros_script
from provisioning.entrypoints.api.schemas import (
    AddressListIn,
    AddressListOut,
    AddressListUpdate,
    AssigneeIn,
    AssignmentIn,
    AssignmentOut,
    ChangeOut,
    ChangesOut,
    DhcpReservationOut,
    DhcpServerIn,
    DhcpServerOut,
    EntryOut,
    MembershipOut,
    MoveIn,
    NextFreeOut,
    PoolDhcpServersIn,
    PoolIn,
    PoolOut,
    RadiusAccountIn,
    RadiusAccountOut,
    RadiusGroupIn,
    RadiusGroupOut,
    RadiusGroupUpdate,
    UninventoriedMacIn,
    UninventoriedMacOut,
)
from provisioning.service_layer import (
    address_lists,
    assignments,
    pools,
    queries,
    radius,
    uninventoried_macs,
)

router = APIRouter()

Moment = Annotated[
    datetime | None, Query(description="A past moment (ISO 8601 with a zone); now when left out")
]


def _moment(at: datetime | None) -> datetime | None:
    if at is not None and at.tzinfo is None:
        raise InvalidInput("`at` needs a time zone, e.g. 2026-11-22T14:05:00Z")
    return at


def _pool_out(view: queries.PoolView) -> PoolOut:
    pool = view.pool
    return PoolOut(
        id=pool.id,
        name=pool.name,
        cidr=pool.cidr,
        version=pool.version,
        description=pool.description,
        size=view.usage.size,
        used=view.usage.used,
        free=view.usage.free,
        utilisation_percent=view.usage.percent,
        dhcp_server_ids=[s.id for s in pool.dhcp_servers],
        created_at=pool.created_at,
    )


def _assignee(body: AssigneeIn) -> assignments.Assignee:
    return assignments.Assignee(
        kind=body.kind,
        mac=body.mac,
        inventory_item_id=body.inventory_item_id,
        radius_account_id=body.radius_account_id,
    )


def _list_out(address_list: AddressList, count: int) -> AddressListOut:
    return AddressListOut(
        id=address_list.id,
        name=address_list.name,
        description=address_list.description,
        rule=address_list.rule,
        entry_count=count,
        created_at=address_list.created_at,
    )


# -- IPAM ---------------------------------------------------------------------------------------


@router.post("/dhcp-servers", response_model=DhcpServerOut, status_code=201, tags=["ipam"])
async def create_dhcp_server(body: DhcpServerIn, uow: UnitOfWorkDep) -> DhcpServerOut:
    """Register a DHCP server that pools can write reservations to."""
    server = await pools.create_dhcp_server(uow, body.name, body.description)
    return DhcpServerOut.model_validate(server)


@router.get("/dhcp-servers", response_model=list[DhcpServerOut], tags=["ipam"])
async def list_dhcp_servers(uow: UnitOfWorkDep) -> list[DhcpServerOut]:
    """Every DHCP server."""
    return [DhcpServerOut.model_validate(s) for s in await queries.list_dhcp_servers(uow)]


@router.get(
    "/dhcp-servers/{server_id}/reservations",
    response_model=list[DhcpReservationOut],
    tags=["ipam"],
)
async def list_dhcp_reservations(server_id: int, uow: UnitOfWorkDep) -> list[DhcpReservationOut]:
    """The server's current reservations (MAC to address), as the DHCP server should hold them."""
    rows = await queries.list_reservations(uow, server_id)
    return [DhcpReservationOut.model_validate(r) for r in rows]


@router.post("/ip-pools", response_model=PoolOut, status_code=201, tags=["ipam"])
async def create_pool(body: PoolIn, uow: UnitOfWorkDep, response: Response) -> PoolOut:
    """Add an IPv4 or IPv6 pool; a malformed CIDR (422) or an overlap (409) is refused."""
    pool = await pools.create_pool(
        uow,
        name=body.name,
        cidr=body.cidr,
        description=body.description,
        dhcp_server_ids=body.dhcp_server_ids,
    )
    response.headers["Location"] = f"/ip-pools/{pool.id}"
    return _pool_out(await queries.pool_detail(uow, pool.id))


@router.get("/ip-pools", response_model=list[PoolOut], tags=["ipam"])
async def list_pools(uow: UnitOfWorkDep) -> list[PoolOut]:
    """Every pool with its utilisation."""
    return [_pool_out(view) for view in await queries.list_pools(uow)]


@router.get("/ip-pools/{pool_id}", response_model=PoolOut, tags=["ipam"])
async def get_pool(pool_id: int, uow: UnitOfWorkDep) -> PoolOut:
    """One pool with its utilisation."""
    return _pool_out(await queries.pool_detail(uow, pool_id))


@router.put("/ip-pools/{pool_id}/dhcp-servers", response_model=PoolOut, tags=["ipam"])
async def set_pool_dhcp_servers(
    pool_id: int, body: PoolDhcpServersIn, uow: UnitOfWorkDep
) -> PoolOut:
    """Choose the pool's DHCP servers; existing MAC reservations move with the choice."""
    await pools.set_pool_dhcp_servers(uow, pool_id, body.dhcp_server_ids)
    return _pool_out(await queries.pool_detail(uow, pool_id))


@router.get("/ip-pools/{pool_id}/next-free", response_model=NextFreeOut, tags=["ipam"])
async def next_free(
    pool_id: int,
    uow: UnitOfWorkDep,
    prefix_length: Annotated[int | None, Query(ge=0, le=128)] = None,
) -> NextFreeOut:
    """The address (or subnet of `prefix_length`) the next assignment would get."""
    return NextFreeOut(
        pool_id=pool_id, address=await queries.next_free(uow, pool_id, prefix_length)
    )


# -- IP assignments -----------------------------------------------------------------------------


@router.post(
    "/accounts/{account_id}/ip-assignments",
    response_model=AssignmentOut,
    status_code=201,
    tags=["ip assignments"],
)
async def assign_ip(
    account_id: int, body: AssignmentIn, uow: UnitOfWorkDep, actor: ActorDep
) -> AssignmentOut:
    """Assign an address (null: the next free one) or a subnet to the account or one of its
    inventory MACs, RADIUS accounts or uninventoried MACs, and provision it (seed 003)."""
    command = assignments.AssignIp(
        account_id=account_id,
        pool_id=body.pool_id,
        address=body.address,
        prefix_length=body.prefix_length,
        assignee=_assignee(body.assignee),
        soft=body.soft,
        description=body.description,
    )
    return AssignmentOut.model_validate(await assignments.assign_ip(uow, command, actor=actor))


@router.get(
    "/accounts/{account_id}/ip-assignments",
    response_model=list[AssignmentOut],
    tags=["ip assignments"],
)
async def list_assignments(
    account_id: int,
    uow: UnitOfWorkDep,
    include_history: Annotated[bool, Query(description="Also the ended assignments")] = False,
) -> list[AssignmentOut]:
    """The account's active assignments, or its whole assignment history."""
    rows = await queries.account_assignments(uow, account_id, include_history=include_history)
    return [AssignmentOut.model_validate(a) for a in rows]


@router.get(
    "/ip-assignments/{assignment_id}", response_model=AssignmentOut, tags=["ip assignments"]
)
async def get_assignment(assignment_id: UUID, uow: UnitOfWorkDep) -> AssignmentOut:
    """One assignment, current or ended."""
    return AssignmentOut.model_validate(await assignments.load_assignment(uow, assignment_id))


@router.delete(
    "/ip-assignments/{assignment_id}", response_model=AssignmentOut, tags=["ip assignments"]
)
async def remove_assignment(
    assignment_id: UUID, uow: UnitOfWorkDep, actor: ActorDep
) -> AssignmentOut:
    """End the assignment (kept in the history) and undo what it provisioned."""
    return AssignmentOut.model_validate(
        await assignments.remove_assignment(uow, assignment_id, actor=actor)
    )


@router.post(
    "/ip-assignments/{assignment_id}/move",
    response_model=AssignmentOut,
    status_code=201,
    tags=["ip assignments"],
)
async def move_assignment(
    assignment_id: UUID, body: MoveIn, uow: UnitOfWorkDep, actor: ActorDep
) -> AssignmentOut:
    """Move the address to another assignee; the answer is the new assignment."""
    moved = await assignments.move_assignment(
        uow,
        assignment_id,
        account_id=body.account_id,
        assignee=_assignee(body.assignee),
        actor=actor,
    )
    return AssignmentOut.model_validate(moved)


@router.post(
    "/accounts/{account_id}/uninventoried-macs",
    response_model=UninventoriedMacOut,
    status_code=201,
    tags=["ip assignments"],
)
async def add_uninventoried_mac(
    account_id: int, body: UninventoriedMacIn, uow: UnitOfWorkDep
) -> UninventoriedMacOut:
    """Record a MAC that is not an inventory item on the account."""
    row = await uninventoried_macs.add_uninventoried_mac(uow, account_id, body.mac)
    return UninventoriedMacOut.model_validate(row)


@router.get(
    "/accounts/{account_id}/uninventoried-macs",
    response_model=list[UninventoriedMacOut],
    tags=["ip assignments"],
)
async def list_uninventoried_macs(account_id: int, uow: UnitOfWorkDep) -> list[UninventoriedMacOut]:
    """The account's uninventoried MACs."""
    rows = await queries.uninventoried_macs(uow, account_id)
    return [UninventoriedMacOut.model_validate(r) for r in rows]


@router.delete("/uninventoried-macs/{mac_id}", status_code=204, tags=["ip assignments"])
async def delete_uninventoried_mac(mac_id: int, uow: UnitOfWorkDep, actor: ActorDep) -> Response:
    """Delete an uninventoried MAC; its IP assignments end."""
    await uninventoried_macs.delete_uninventoried_mac(uow, mac_id, actor=actor)
    return Response(status_code=204)


# -- address lists --------------------------------------------------------------------------------


@router.post(
    "/address-lists", response_model=AddressListOut, status_code=201, tags=["address lists"]
)
async def create_address_list(body: AddressListIn, uow: UnitOfWorkDep) -> AddressListOut:
    """Add an address list whose entries follow its rule (status, data service, delinquency)."""
    created = await address_lists.create_address_list(
        uow, name=body.name, rule=body.rule, description=body.description
    )
    return _list_out(*await queries.address_list(uow, created.id))


@router.get("/address-lists", response_model=list[AddressListOut], tags=["address lists"])
async def list_address_lists(uow: UnitOfWorkDep) -> list[AddressListOut]:
    """Every address list with its number of current entries."""
    return [_list_out(lst, count) for lst, count in await queries.list_address_lists(uow)]


@router.get("/address-lists/changes", response_model=ChangesOut, tags=["routers"])
async def all_changes(
    uow: UnitOfWorkDep,
    since: Annotated[int, Query(ge=0, description="The cursor of the last read; 0 for all")] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> ChangesOut:
    """Every list's additions and removals after the cursor, in the order they happened."""
    rows, cursor = await queries.changes(uow, since=since, limit=limit)
    return _changes_out(rows, cursor)


def _changes_out(rows: list[tuple[AddressListChange, str]], cursor: int) -> ChangesOut:
    return ChangesOut(
        changes=[
            ChangeOut(
                seq=c.seq,
                address_list_id=c.address_list_id,
                address_list=name,
                action=c.action,
                address=c.address,
                account_id=c.account_id,
                at=c.at,
            )
            for c, name in rows
        ],
        cursor=cursor,
    )


@router.get("/address-lists/{list_id}", response_model=AddressListOut, tags=["address lists"])
async def get_address_list(list_id: int, uow: UnitOfWorkDep) -> AddressListOut:
    """One address list."""
    return _list_out(*await queries.address_list(uow, list_id))


@router.put("/address-lists/{list_id}", response_model=AddressListOut, tags=["address lists"])
async def update_address_list(
    list_id: int, body: AddressListUpdate, uow: UnitOfWorkDep
) -> AddressListOut:
    """Change the list's rule; entries follow at once."""
    await address_lists.update_address_list(
        uow, list_id, rule=body.rule, description=body.description
    )
    return _list_out(*await queries.address_list(uow, list_id))


@router.get(
    "/address-lists/{list_id}/entries",
    response_model=list[EntryOut],
    tags=["address lists", "routers"],
    responses={304: {"description": "Unchanged since the ETag given in If-None-Match"}},
)
async def list_entries(
    list_id: int,
    uow: UnitOfWorkDep,
    response: Response,
    at: Moment = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> list[EntryOut] | Response:
    """The list's current entries (or those it held at `at`), with an ETag for routers."""
    address_list, entries, seq = await queries.list_entries(uow, list_id, at=_moment(at))
    if at is None:
        etag = f'"{address_list.id}-{seq}"'
        if if_none_match and etag in [
            tag.strip().removeprefix("W/") for tag in if_none_match.split(",")
        ]:
            return Response(status_code=304, headers={"ETag": etag})
        response.headers["ETag"] = etag
    return [EntryOut.model_validate(e) for e in entries]


@router.get("/address-lists/{list_id}/changes", response_model=ChangesOut, tags=["routers"])
async def list_changes(
    list_id: int,
    uow: UnitOfWorkDep,
    since: Annotated[int, Query(ge=0, description="The cursor of the last read; 0 for all")] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> ChangesOut:
    """The list's additions and removals after the cursor, in the order they happened."""
    rows, cursor = await queries.changes(uow, since=since, list_id=list_id, limit=limit)
    return _changes_out(rows, cursor)


@router.get(
    "/address-lists/{list_id}/routeros",
    tags=["routers"],
    # Documented by hand: a response_class would mark the JSON errors text/plain as well.
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def routeros_export(list_id: int, uow: UnitOfWorkDep) -> PlainTextResponse:
    """A RouterOS script (`/ip firewall address-list ...`) that makes the router's list match."""
    address_list, entries, seq = await queries.list_entries(uow, list_id)
    script = routeros_script(address_list.name, [(e.address, e.account_id) for e in entries])
    return PlainTextResponse(script, headers={"ETag": f'"{address_list.id}-{seq}"'})


@router.get(
    "/accounts/{account_id}/address-list-entries",
    response_model=list[MembershipOut],
    tags=["address lists"],
)
async def account_entries(account_id: int, uow: UnitOfWorkDep) -> list[MembershipOut]:
    """The address lists the account's addresses are on now."""
    return [
        _membership(entry, name) for entry, name in await queries.account_entries(uow, account_id)
    ]


def _membership(entry: AddressListEntry, name: str) -> MembershipOut:
    return MembershipOut(
        address=entry.address,
        account_id=entry.account_id,
        address_list_id=entry.address_list_id,
        assignment_id=entry.assignment_id,
        valid_from=entry.valid_from,
        valid_to=entry.valid_to,
        address_list=name,
    )


@router.get("/address-list-memberships", response_model=list[MembershipOut], tags=["address lists"])
async def memberships(
    uow: UnitOfWorkDep,
    address: Annotated[str, Query(min_length=2, max_length=64)],
    at: Moment = None,
) -> list[MembershipOut]:
    """Which lists held this address at `at` (or ever), each with valid_from and valid_to."""
    rows = await queries.memberships(uow, address, _moment(at))
    return [_membership(entry, name) for entry, name in rows]


# -- RADIUS -------------------------------------------------------------------------------------


@router.post(
    "/accounts/{account_id}/radius-accounts",
    response_model=RadiusAccountOut,
    status_code=201,
    tags=["radius"],
)
async def create_radius_account(
    account_id: int, body: RadiusAccountIn, uow: UnitOfWorkDep
) -> RadiusAccountOut:
    """Add a RADIUS login to the account (written to FreeRADIUS's radcheck)."""
    created = await radius.create_radius_account(
        uow, account_id, username=body.username, password=body.password
    )
    return RadiusAccountOut.model_validate(created)


@router.get(
    "/accounts/{account_id}/radius-accounts", response_model=list[RadiusAccountOut], tags=["radius"]
)
async def list_radius_accounts(account_id: int, uow: UnitOfWorkDep) -> list[RadiusAccountOut]:
    """The account's RADIUS logins."""
    return [
        RadiusAccountOut.model_validate(r) for r in await queries.radius_accounts(uow, account_id)
    ]


@router.delete("/radius-accounts/{radius_account_id}", status_code=204, tags=["radius"])
async def delete_radius_account(radius_account_id: int, uow: UnitOfWorkDep) -> Response:
    """Delete a RADIUS login; its IP assignments end and FreeRADIUS rejects it."""
    await radius.delete_radius_account(uow, radius_account_id)
    return Response(status_code=204)


@router.post("/radius-groups", response_model=RadiusGroupOut, status_code=201, tags=["radius"])
async def create_radius_group(body: RadiusGroupIn, uow: UnitOfWorkDep) -> RadiusGroupOut:
    """Add a RADIUS group (e.g. suspended) whose members follow a status or service rule."""
    group = await radius.create_radius_group(
        uow,
        name=body.name,
        rule=body.rule,
        attributes=[a.model_dump() for a in body.attributes],
        priority=body.priority,
        fall_through=body.fall_through,
    )
    return RadiusGroupOut.model_validate(group)


@router.put("/radius-groups/{group_id}", response_model=RadiusGroupOut, tags=["radius"])
async def update_radius_group(
    group_id: int, body: RadiusGroupUpdate, uow: UnitOfWorkDep
) -> RadiusGroupOut:
    """Change a group's rule, reply attributes, priority or fall-through."""
    group = await radius.update_radius_group(
        uow,
        group_id,
        rule=body.rule,
        attributes=[a.model_dump() for a in body.attributes],
        priority=body.priority,
        fall_through=body.fall_through,
    )
    return RadiusGroupOut.model_validate(group)


@router.get("/radius-groups", response_model=list[RadiusGroupOut], tags=["radius"])
async def list_radius_groups(uow: UnitOfWorkDep) -> list[RadiusGroupOut]:
    """Every RADIUS group in the order FreeRADIUS reads them, data-service groups included."""
    return [RadiusGroupOut.model_validate(g) for g in await queries.radius_groups(uow)]
