"""What the scheduler can tell about an event before it runs, from its replicas.

Refusals: an account it has not heard of or that is disconnected, a status or a service that
is not in accounts' or billing's catalogue. Warnings: what can already be seen to fail at
the event's time (adding a data service while one is present, removing a service that will
not be there, an event after a scheduled disconnect, children a disconnect leaves connected).

These run inside the caller's unit of work and never enter it.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import and_, or_, select

from backhaul_contracts.common import ServiceKind
from backhaul_kit.errors import Conflict, InvalidInput, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from scheduler.adapters.tables import (
    KnownAccount,
    KnownAccountService,
    KnownService,
    KnownStatus,
    ScheduledEvent,
)
from scheduler.domain import rules
from scheduler.domain.rules import Action, State


async def schedulable_account(uow: UnitOfWork, account_id: int) -> KnownAccount:
    """The account, if events can be scheduled on it: 404 if unknown, 409 if disconnected."""
    account = await uow.session.get(KnownAccount, account_id)
    if account is None:
        raise NotFound(f"account {account_id} not found")
    if account.disconnected:
        raise Conflict(f"account {account_id} is disconnected; nothing can be scheduled on it")
    return account


async def known_status(uow: UnitOfWork, status_id: int, *, what: str = "status_id") -> None:
    """Refuse (422, naming the field `what`) a status not in accounts' catalogue."""
    if await uow.session.get(KnownStatus, status_id) is None:
        raise InvalidInput(
            f"{what}: account status {status_id} does not exist (not in the catalogue accounts "
            "has published; GET /account-statuses on accounts lists the statuses)"
        )


async def known_service(uow: UnitOfWork, service_id: int, *, what: str = "service_id") -> None:
    """Refuse (422, naming the field `what`) a service not in billing's catalogue."""
    if await uow.session.get(KnownService, service_id) is None:
        raise InvalidInput(
            f"{what}: service {service_id} does not exist (not in the catalogue billing has "
            "published; GET /services on billing lists the services)"
        )


async def ensure_catalogue_has(uow: UnitOfWork, parameters: rules.Parameters) -> None:
    """The status to move to, or the service to add, must exist (422 naming it otherwise).

    Known from the catalogue events of accounts and billing. A service to remove is not
    checked: that it will not be on the account is already a warning.
    """
    if isinstance(parameters, rules.ChangeStatusParameters):
        await known_status(uow, parameters.status_id, what="parameters.status_id")
    elif isinstance(parameters, rules.AddServiceParameters):
        await known_service(uow, parameters.service_id, what="parameters.service_id")


async def foresee(
    uow: UnitOfWork,
    account_id: int,
    action: Action,
    parameters: rules.Parameters,
    run_at: datetime,
    sequence: int,
    *,
    exclude: UUID | None = None,
) -> list[str]:
    """Warnings from what the scheduler knows: the account's services and what runs before."""
    session = uow.session
    before = [
        ScheduledEvent.account_id == account_id,
        ScheduledEvent.state.in_([State.PENDING.value, State.DISPATCHED.value]),
        or_(
            ScheduledEvent.run_at < run_at,
            and_(ScheduledEvent.run_at == run_at, ScheduledEvent.sequence <= sequence),
        ),
    ]
    if exclude is not None:
        before.append(ScheduledEvent.id != exclude)
    earlier = list(
        await session.scalars(
            select(ScheduledEvent)
            .where(*before)
            .order_by(ScheduledEvent.run_at, ScheduledEvent.sequence, ScheduledEvent.created_at)
        )
    )
    disconnect_at = next((e.run_at for e in earlier if e.action == Action.DISCONNECT.value), None)
    warnings = rules.foresee_disconnect(account_id, action, disconnect_at)
    if action is Action.DISCONNECT:
        warnings += rules.foresee_children(
            account_id, await _children_left_connected(uow, account_id)
        )
    if action not in (Action.ADD_SERVICE, Action.REMOVE_SERVICE):
        return warnings
    present = list(
        await session.scalars(
            select(KnownAccountService.service_id).where(
                KnownAccountService.account_id == account_id
            )
        )
    )
    planned = [
        rules.PlannedChange(Action(e.action), int(e.parameters["service_id"]))
        for e in earlier
        if e.action in (Action.ADD_SERVICE.value, Action.REMOVE_SERVICE.value)
    ]
    wanted = {*present, *(p.service_id for p in planned)}
    if isinstance(parameters, rules.AddServiceParameters | rules.RemoveServiceParameters):
        wanted.add(parameters.service_id)
    known = list(await session.scalars(select(KnownService).where(KnownService.id.in_(wanted))))
    return warnings + rules.foresee_failures(
        account_id=account_id,
        action=action,
        parameters=parameters,
        run_at=run_at,
        present=present,
        planned_before=planned,
        kinds={s.id: ServiceKind(s.kind) for s in known},
        names={s.id: s.name for s in known},
    )


async def _children_left_connected(uow: UnitOfWork, account_id: int) -> list[int]:
    """Child accounts neither disconnected nor with a disconnect of their own scheduled."""
    scheduled = select(ScheduledEvent.account_id).where(
        ScheduledEvent.action == Action.DISCONNECT.value,
        ScheduledEvent.state.in_([State.PENDING.value, State.DISPATCHED.value]),
    )
    return list(
        await uow.session.scalars(
            select(KnownAccount.id)
            .where(
                KnownAccount.parent_id == account_id,
                KnownAccount.disconnected.is_(False),
                KnownAccount.id.not_in(scheduled),
            )
            .order_by(KnownAccount.id)
        )
    )
