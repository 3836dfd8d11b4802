"""Groups, parent and child accounts, and edits of an account's details."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from accounts.adapters.tables import Account, AccountGroup, AccountType, ServiceableAddress
from accounts.domain.rules import creates_cycle
from accounts.service_layer.accounts import NewAddress, claim_address
from accounts.service_layer.records import address_value, get_account, log_action
from backhaul_contracts.events.accounts import AccountUpdated
from backhaul_kit.errors import Conflict, NotFound
from backhaul_kit.unit_of_work import UnitOfWork


async def create_group(uow: UnitOfWork, name: str) -> AccountGroup:
    async with uow:
        if await uow.session.scalar(select(AccountGroup.id).where(AccountGroup.name == name)):
            raise Conflict(f"an account group named {name!r} already exists")
        group = AccountGroup(name=name)
        uow.session.add(group)
        await uow.session.flush()
        return group


async def list_groups(uow: UnitOfWork) -> list[AccountGroup]:
    async with uow:
        return list(
            (await uow.session.scalars(select(AccountGroup).order_by(AccountGroup.name))).all()
        )


async def _groups(uow: UnitOfWork, group_ids: list[int]) -> list[AccountGroup]:
    groups = list(
        (
            await uow.session.scalars(select(AccountGroup).where(AccountGroup.id.in_(group_ids)))
        ).all()
    )
    missing = sorted(set(group_ids) - {g.id for g in groups})
    if missing:
        raise NotFound(f"account group(s) {missing} not found")
    return groups


async def _emit_updated(uow: UnitOfWork, account: Account, changed: list[str]) -> None:
    await uow.emit(
        AccountUpdated(
            account_id=account.id,
            name=account.name,
            parent_account_id=account.parent_id,
            serviceable_address=address_value(account.serviceable_address),
            mailing_address=None,
            billing_day=account.billing_day,
            changed_fields=changed,
        ),
        subject=account.id,
    )


async def update_account(
    uow: UnitOfWork, account_id: int, fields: dict[str, Any], *, actor: str
) -> Account:
    """Edit an account's details; every change is logged and published as AccountUpdated.

    `fields` holds only what the caller sent: name, account_type_id, billing_day,
    mailing_address, custom_fields, group_ids, parent_account_id, serviceable_address.
    """
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        changes: dict[str, Any] = {}
        for key in ("name", "billing_day", "mailing_address", "custom_fields"):
            if key in fields and getattr(account, key) != fields[key]:
                changes[key] = {"from": getattr(account, key), "to": fields[key]}
                setattr(account, key, fields[key])
        if "account_type_id" in fields and fields["account_type_id"] != account.account_type_id:
            type_id = fields["account_type_id"]
            if type_id is not None and await uow.session.get(AccountType, type_id) is None:
                raise NotFound(f"account type {type_id} not found")
            changes["account_type_id"] = {"from": account.account_type_id, "to": type_id}
            account.account_type_id = type_id
        if "group_ids" in fields:
            groups = await _groups(uow, list(fields["group_ids"] or []))
            before = sorted(g.name for g in account.groups)
            if before != sorted(g.name for g in groups):
                account.groups = groups
                changes["groups"] = {"from": before, "to": sorted(g.name for g in groups)}
        if "parent_account_id" in fields and fields["parent_account_id"] != account.parent_id:
            parent_id = fields["parent_account_id"]
            if parent_id is not None:
                await _check_parent(uow, account.id, parent_id)
            changes["parent_account_id"] = {"from": account.parent_id, "to": parent_id}
            account.parent_id = parent_id
        if "serviceable_address" in fields:
            changes.update(await _move_address(uow, account, fields["serviceable_address"]))
        if changes:
            log_action(uow, account.id, actor, "account_updated", **changes)
            await uow.session.flush()
            await uow.session.refresh(account)
            await _emit_updated(uow, account, sorted(changes))
        return account


async def _check_parent(uow: UnitOfWork, child_id: int, parent_id: int) -> None:
    if parent_id == child_id:
        raise Conflict("an account cannot be its own parent")
    ancestry: dict[int, int | None] = {}
    current: int | None = parent_id
    while current is not None and current not in ancestry:
        row = await uow.session.get(Account, current)
        if row is None:
            raise NotFound(f"parent account {current} not found")
        ancestry[current] = row.parent_id
        current = row.parent_id
    if creates_cycle(child_id, parent_id, ancestry):
        raise Conflict(
            f"making account {parent_id} the parent of account {child_id} would create a cycle"
        )


async def _move_address(
    uow: UnitOfWork, account: Account, new: NewAddress | None
) -> dict[str, Any]:
    if account.disconnected_at is not None and new is not None:
        raise Conflict(f"account {account.id} is disconnected: it holds no serviceable address")
    old = account.serviceable_address
    before = address_value(old)
    if old is not None:
        old.account_id = None
        await uow.session.flush()
    claimed: ServiceableAddress | None = None
    if new is not None:
        claimed = await claim_address(uow, new, account.id)
        await uow.session.flush()
    after = address_value(claimed)
    if before == after:
        return {}
    return {
        "serviceable_address": {
            "from": before.model_dump() if before else None,
            "to": after.model_dump() if after else None,
        }
    }


async def children(uow: UnitOfWork, account_id: int) -> list[Account]:
    async with uow:
        await get_account(uow, account_id)
        rows = await uow.session.scalars(
            select(Account).where(Account.parent_id == account_id).order_by(Account.id)
        )
        return list(rows.unique().all())
