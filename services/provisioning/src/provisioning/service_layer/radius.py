"""RADIUS accounts and groups, and the FreeRADIUS rows that follow them. Each handler owns
its unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import delete, select

from backhaul_contracts.events.billing import AccountServiceAdded
from backhaul_kit import clock
from backhaul_kit.errors import Conflict, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters.tables import IpAssignment, RadGroupReply, RadiusAccount, RadiusGroup
from provisioning.domain.rules import (
    MembershipRule,
    ReplyAttribute,
    rate_limit_attributes,
    reply_attribute,
)
from provisioning.service_layer.account_state import forget_rules
from provisioning.service_layer.assignments import end_assignment
from provisioning.service_layer.network import (
    changing,
    get_replica,
    reconcile_lists,
    sync_radius_user,
)

log = structlog.get_logger(__name__)


STATUS_GROUP_PRIORITY = 1  # status groups are read first: a suspended reply wins
SERVICE_GROUP_PRIORITY = 10


async def create_radius_account(
    uow: UnitOfWork, account_id: int, *, username: str, password: str
) -> RadiusAccount:
    """Add a RADIUS login to an account; FreeRADIUS can authenticate it at once."""
    async with uow:
        replica = await get_replica(uow, account_id)
        if replica.disconnected_at is not None:
            raise Conflict(f"account {account_id} is disconnected")
        if await uow.session.scalar(
            select(RadiusAccount.id).where(
                RadiusAccount.username == username, RadiusAccount.deleted_at.is_(None)
            )
        ):
            raise Conflict(f"RADIUS username {username!r} is already taken")
        radius_account = RadiusAccount(
            account_id=account_id, username=username, password=password, created_at=clock.now()
        )
        uow.session.add(radius_account)
        await uow.session.flush()
        await sync_radius_user(uow, radius_account)
        return radius_account


async def delete_radius_account(uow: UnitOfWork, radius_account_id: int) -> RadiusAccount:
    """Delete a RADIUS login: its IP assignments end and its FreeRADIUS rows go."""
    async with changing(uow):
        radius_account = await uow.session.get(RadiusAccount, radius_account_id)
        if radius_account is None or radius_account.deleted_at is not None:
            raise NotFound(f"RADIUS account {radius_account_id} not found")
        now = clock.now()
        radius_account.deleted_at = now
        assignments = await uow.session.scalars(
            select(IpAssignment).where(
                IpAssignment.radius_account_id == radius_account.id,
                IpAssignment.removed_at.is_(None),
            )
        )
        for assignment in assignments.all():
            await end_assignment(uow, assignment, now, reason="removed")
        await sync_radius_user(uow, radius_account)  # deleted: its rows go
        await reconcile_lists(uow, radius_account.account_id, now)
        return radius_account


def _attributes(raw: Sequence[dict[str, str]]) -> list[ReplyAttribute]:
    return [reply_attribute(a["attribute"], a.get("op", ":="), a["value"]) for a in raw]


async def _write_group_replies(uow: UnitOfWork, group: RadiusGroup) -> None:
    forget_rules(uow)  # every change of a group comes here: the cached rules are stale
    await uow.session.execute(delete(RadGroupReply).where(RadGroupReply.groupname == group.name))
    for attribute in _attributes(group.attributes):
        uow.session.add(
            RadGroupReply(
                groupname=group.name,
                attribute=attribute.attribute,
                op=attribute.op,
                value=attribute.value,
            )
        )
    if group.fall_through:
        uow.session.add(
            RadGroupReply(groupname=group.name, attribute="Fall-Through", op="=", value="Yes")
        )
    await uow.session.flush()


async def _resync_all_radius_users(uow: UnitOfWork) -> None:
    for radius_account in (
        await uow.session.scalars(select(RadiusAccount).where(RadiusAccount.deleted_at.is_(None)))
    ).all():
        await sync_radius_user(uow, radius_account)


async def create_radius_group(
    uow: UnitOfWork,
    *,
    name: str,
    rule: dict[str, Any],
    attributes: Sequence[dict[str, str]],
    priority: int = STATUS_GROUP_PRIORITY,
    fall_through: bool = False,
) -> RadiusGroup:
    """Add a RADIUS group (e.g. `suspended` for some statuses) with its reply attributes.

    Members follow the rule. Groups are read in priority order and, unless a group falls
    through, the first matching group's reply is the one the NAS gets.
    """
    async with uow:
        parsed = MembershipRule.from_dict(rule)
        checked = _attributes(attributes)
        if await uow.session.scalar(select(RadiusGroup.id).where(RadiusGroup.name == name)):
            raise Conflict(f"a RADIUS group named {name!r} already exists")
        group = RadiusGroup(
            name=name,
            kind="status" if parsed.status_ids or parsed.activating is not None else "custom",
            rule=parsed.to_dict(),
            priority=priority,
            fall_through=fall_through,
            attributes=[a.__dict__ for a in checked],
            created_at=clock.now(),
        )
        uow.session.add(group)
        await uow.session.flush()
        await _write_group_replies(uow, group)
        await _resync_all_radius_users(uow)
        return group


async def update_radius_group(
    uow: UnitOfWork,
    group_id: int,
    *,
    rule: dict[str, Any],
    attributes: Sequence[dict[str, str]],
    priority: int,
    fall_through: bool,
) -> RadiusGroup:
    """Change a group's rule, replies or priority; FreeRADIUS sees it on the next request."""
    async with uow:
        group = await uow.session.get(RadiusGroup, group_id)
        if group is None:
            raise NotFound(f"RADIUS group {group_id} not found")
        if group.kind == "data_service":
            raise Conflict(
                f"RADIUS group {group.name!r} follows its data service's speeds; "
                "change the service in billing instead"
            )
        parsed = MembershipRule.from_dict(rule)
        checked = _attributes(attributes)
        group.rule = parsed.to_dict()
        group.kind = "status" if parsed.status_ids or parsed.activating is not None else "custom"
        group.attributes = [a.__dict__ for a in checked]
        group.priority = priority
        group.fall_through = fall_through
        await uow.session.flush()
        await _write_group_replies(uow, group)
        await _resync_all_radius_users(uow)
        return group


async def ensure_service_group(uow: UnitOfWork, service: AccountServiceAdded) -> None:
    """A RADIUS group per data service, its rate limit from the service's speeds."""
    ref = service.service
    attributes = [a.__dict__ for a in rate_limit_attributes(ref.download_kbps, ref.upload_kbps)]
    group = (
        await uow.session.execute(
            select(RadiusGroup).where(RadiusGroup.service_id == ref.service_id)
        )
    ).scalar_one_or_none()
    if group is None:
        group = RadiusGroup(
            name=f"service-{ref.service_id}",
            kind="data_service",
            service_id=ref.service_id,
            rule={"service_ids": [ref.service_id]},
            priority=SERVICE_GROUP_PRIORITY,
            fall_through=False,
            attributes=attributes,
            created_at=clock.now(),
        )
        uow.session.add(group)
    elif group.attributes == attributes:
        return
    group.attributes = attributes  # the speeds may have changed in the catalogue
    await uow.session.flush()
    await _write_group_replies(uow, group)
