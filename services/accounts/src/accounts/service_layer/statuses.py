"""Account statuses: the defaults, custom ones, and the optional seed set (seeds 000/001)."""

from __future__ import annotations

import structlog
from sqlalchemy import func, select

from accounts.adapters.tables import Account, AccountStatus, Setting
from accounts.domain.rules import SUGGESTED_STATUSES, normalise_colour
from accounts.service_layer.records import get_status
from accounts.service_layer.settings import DISCONNECT_STATUS_SETTING
from backhaul_contracts.events.accounts import AccountStatusDefined, AccountStatusDeleted
from backhaul_kit.announce import announce_once
from backhaul_kit.clock import now
from backhaul_kit.errors import Conflict
from backhaul_kit.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

# Set once every status has been announced; a new value would announce them all again.
CATALOGUE_ANNOUNCED_SETTING = "status_catalogue_announced"


async def announce_status(uow: UnitOfWork, status: AccountStatus) -> None:
    """Stage AccountStatusDefined: the status as it now is (written, so it has its id)."""
    await uow.session.flush()
    event = AccountStatusDefined(
        status_id=status.id,
        name=status.name,
        activates_account=status.activates_account,
        icon=status.icon,
        colour=status.colour,
        is_default=status.is_default,
        defined_at=now(),
    )
    await uow.emit(event, subject=event.subject)


async def create_status(
    uow: UnitOfWork, *, name: str, activates_account: bool, icon: str, colour: str
) -> AccountStatus:
    """Add a custom account status; names are unique. Publishes AccountStatusDefined."""
    async with uow:
        colour = normalise_colour(colour)
        taken = await uow.session.scalar(
            select(func.count()).select_from(AccountStatus).where(AccountStatus.name == name)
        )
        if taken:
            raise Conflict(f"an account status named {name!r} already exists")
        status = AccountStatus(
            name=name,
            activates_account=activates_account,
            icon=icon,
            colour=colour,
            is_default=False,
        )
        uow.session.add(status)
        await announce_status(uow, status)
        return status


async def update_status(
    uow: UnitOfWork,
    status_id: int,
    *,
    name: str | None = None,
    icon: str | None = None,
    colour: str | None = None,
    activates_account: bool | None = None,
) -> AccountStatus:
    """Rename, re-icon or recolour a status; a default's activating flag is fixed. A change
    publishes AccountStatusDefined."""
    async with uow:
        status = await get_status(uow, status_id)
        if name is not None and name != status.name:
            taken = await uow.session.scalar(
                select(AccountStatus.id).where(AccountStatus.name == name)
            )
            if taken is not None:
                raise Conflict(f"an account status named {name!r} already exists")
            status.name = name
        if icon is not None:
            status.icon = icon
        if colour is not None:
            status.colour = normalise_colour(colour)
        if activates_account is not None and activates_account != status.activates_account:
            if status.is_default:
                raise Conflict(
                    f"{status.name} is a default status: whether it activates an account is fixed"
                )
            in_use = await uow.session.scalar(
                select(func.count()).select_from(Account).where(Account.status_id == status.id)
            )
            if in_use:
                raise Conflict(
                    f"status {status.name!r} is used by {in_use} account(s): changing whether it "
                    "activates them would change their billing silently; move them first"
                )
            status.activates_account = activates_account
        if uow.session.is_modified(status):
            await announce_status(uow, status)
        return status


async def delete_status(uow: UnitOfWork, status_id: int) -> None:
    """Delete a custom status no account uses and that is not the disconnect status; publishes
    AccountStatusDeleted."""
    async with uow:
        status = await get_status(uow, status_id)
        if status.is_default:
            raise Conflict(f"{status.name} is a default status and cannot be deleted")
        in_use = await uow.session.scalar(
            select(func.count()).select_from(Account).where(Account.status_id == status.id)
        )
        if in_use:
            raise Conflict(f"status {status.name!r} is used by {in_use} account(s)")
        setting = await uow.session.get(Setting, DISCONNECT_STATUS_SETTING)
        if setting is not None and int(setting.value) == status.id:
            raise Conflict(f"status {status.name!r} is the disconnect status in /settings")
        deleted = AccountStatusDeleted(status_id=status.id, name=status.name, deleted_at=now())
        await uow.session.delete(status)
        await uow.emit(deleted, subject=deleted.subject)


async def install_suggested_statuses(uow: UnitOfWork) -> list[AccountStatus]:
    """Add the seed documents' common custom statuses that are not there yet."""
    async with uow:
        existing = set((await uow.session.scalars(select(AccountStatus.name))).all())
        added = []
        for name, activates, icon, colour in SUGGESTED_STATUSES:
            if name in existing:
                continue
            status = AccountStatus(
                name=name, activates_account=activates, icon=icon, colour=colour, is_default=False
            )
            uow.session.add(status)
            added.append(status)
        for status in added:
            await announce_status(uow, status)
        return added


async def announce_statuses(uow: UnitOfWork) -> int:
    """Publish AccountStatusDefined for every status, once per database; returns how many.

    The defaults come from a migration, and statuses older than the catalogue events were
    written without one: this is how other services' replicas learn of them."""
    return await announce_once(
        uow,
        select(AccountStatus).order_by(AccountStatus.id),
        announce_status,
        marker=Setting,
        key=CATALOGUE_ANNOUNCED_SETTING,
    )
