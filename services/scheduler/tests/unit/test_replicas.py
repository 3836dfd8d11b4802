"""The replicas: what accounts' and billing's events tell the scheduler, handled with no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from backhaul_contracts import Envelope
from backhaul_contracts.common import ServiceKind, StatusRef
from backhaul_contracts.events.accounts import AccountStatusDefined, AccountStatusDeleted
from backhaul_contracts.events.billing import AccountServiceRemoved
from backhaul_kit.testing import Handlers
from scheduler.adapters.tables import KnownAccount, KnownAccountService, KnownService, KnownStatus
from scheduler.service_layer import replicas

from .replica_events import ACTIVE, OtherServices, service_ref


async def known(handlers: Handlers, model: type, key: int):
    async with handlers.uow() as uow:
        return await uow.session.get(model, key)


async def services_of(handlers: Handlers, account_id: int) -> list[tuple[int, int]]:
    async with handlers.uow() as uow:
        rows = await uow.session.execute(
            select(KnownAccountService.account_service_id, KnownAccountService.service_id)
            .where(KnownAccountService.account_id == account_id)
            .order_by(KnownAccountService.account_service_id)
        )
        return [tuple(row) for row in rows]


async def test_a_created_account_is_known_and_schedulable(handlers, others: OtherServices):
    await others.account_created(401, parent_account_id=400)
    account = await known(handlers, KnownAccount, 401)
    assert account is not None
    assert (account.name, account.status_id, account.parent_id, account.disconnected) == (
        "Account 401",
        ACTIVE.id,
        400,
        False,
    )

    await others.account_disconnected(401)
    assert (await known(handlers, KnownAccount, 401)).disconnected is True
    # Created again (a replay from the start of the log): schedulable again.
    await others.account_created(401)
    assert (await known(handlers, KnownAccount, 401)).disconnected is False


async def test_the_replica_follows_an_accounts_services(handlers, others: OtherServices):
    await others.service_added(402, account_service_id=900, service_id=10, kind=ServiceKind.DATA)
    # At-least-once delivery: the same addition again adds no second row.
    await others.service_added(402, account_service_id=900, service_id=10, kind=ServiceKind.DATA)
    await others.service_added(
        402, account_service_id=901, service_id=20, kind=ServiceKind.RECURRING
    )
    assert await services_of(handlers, 402) == [(900, 10), (901, 20)]
    service = await known(handlers, KnownService, 10)
    assert service is not None and (service.name, service.kind) == ("Service 10", "data")

    removed = AccountServiceRemoved(
        account_id=402,
        account_service_id=900,
        service=service_ref(10, ServiceKind.DATA),
        removed_at=datetime.now(UTC),
    )
    emitted = await handlers.handle(replicas.on_account_service_removed, removed, subject=402)
    assert emitted == []
    assert await services_of(handlers, 402) == [(901, 20)]
    # The catalogue still knows the service: it can be scheduled for addition again.
    assert await known(handlers, KnownService, 10) is not None


async def test_the_status_catalogue_keeps_the_latest_definition_and_forgets_deleted_ones(
    handlers, others: OtherServices
):
    await others.status_defined(StatusRef(id=12, name="Away", activates_account=True))
    older = AccountStatusDefined(
        status_id=12,
        name="Vacation",
        activates_account=False,
        icon="circle",
        colour="#9E9E9E",
        defined_at=datetime.now(UTC),
    )
    late = Envelope.wrap(older, producer="accounts", subject=older.subject).model_copy(
        update={"occurred_at": datetime.now(UTC) - timedelta(hours=1)}
    )
    async with handlers.uow() as uow:  # the consumer's open unit of work
        await replicas.on_account_status_defined(older, late, uow)
    status = await known(handlers, KnownStatus, 12)
    assert status is not None and (status.name, status.activates_account) == ("Away", True)

    deleted = AccountStatusDeleted(status_id=12, name="Away", deleted_at=datetime.now(UTC))
    await handlers.handle(replicas.on_account_status_deleted, deleted, subject=deleted.subject)
    assert await known(handlers, KnownStatus, 12) is None


async def test_an_event_handler_works_in_the_consumers_unit_of_work_and_never_opens_it(
    handlers, others: OtherServices
):
    """Given a unit of work nobody has entered, the handler fails instead of opening one; and
    what it did is undone with the consumer's transaction, so the inbox row and the effect
    always land together."""
    deleted = AccountStatusDeleted(status_id=13, name="Gone", deleted_at=datetime.now(UTC))
    envelope = Envelope.wrap(deleted, producer="accounts", subject=deleted.subject)
    with pytest.raises(RuntimeError, match="not active"):
        await replicas.on_account_status_deleted(deleted, envelope, handlers.uow())

    await others.status_defined(StatusRef(id=13, name="Gone", activates_account=False))
    with pytest.raises(LookupError):
        async with handlers.uow() as uow:
            await replicas.on_account_status_deleted(deleted, envelope, uow)
            raise LookupError("the consumer's transaction fails after the handler")
    assert await known(handlers, KnownStatus, 13) is not None
