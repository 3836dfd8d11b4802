"""Events from accounts and billing: the account replica follows them, and the network
follows the replica.

Every handler here is called by the consumer (entrypoints/consumers.py registers them) with
the consumer's open unit of work, the inbox transaction of a whole polled batch or of one
replayed event, and never enters it again: `reconciling` notes its list changes for the
feed, written once when that transaction commits. A handler that fails leaves the rollback
to the consumer, which replays the batch one event at a time, so none needs a savepoint.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import delete, exists, insert

from backhaul_contracts import Envelope
from backhaul_contracts.common import ReleasedIp, ServiceKind, StatusRef
from backhaul_contracts.events import provisioning as events
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
)
from backhaul_contracts.events.billing import (
    AccountDelinquencyChanged,
    AccountServiceAdded,
    AccountServiceRemoved,
)
from backhaul_kit import clock
from backhaul_kit.unit_of_work import UnitOfWork
from provisioning.adapters.tables import (
    AccountDataService,
    NetworkRelease,
    UninventoriedMac,
    table_of,
)
from provisioning.service_layer.account_state import hand_over, replica_changed, update_replica
from provisioning.service_layer.assignments import end_account_assignments
from provisioning.service_layer.network import (
    reconcile,
    reconcile_lists,
    reconcile_radius,
    reconciling,
    replica_for_update,
)
from provisioning.service_layer.radius import ensure_service_group

log = structlog.get_logger(__name__)

_RELEASES = "network_releases"


def _status(status: StatusRef) -> dict[str, Any]:
    return {
        "status_id": status.id,
        "status_name": status.name,
        "activates": status.activates_account,
    }


async def on_account_created(event: AccountCreated, envelope: Envelope, uow: UnitOfWork) -> None:
    """Start the account's replica with its status."""
    async with reconciling(uow):
        now = clock.now()
        hand_over(uow, await replica_changed(uow, event.account_id, _status(event.status), now))
        await reconcile(uow, event.account_id, now)


async def on_status_changed(
    event: AccountStatusChanged, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Entries and RADIUS groups follow the new status."""
    async with reconciling(uow):
        now = clock.now()
        values = _status(event.status)
        if event.status.activates_account:
            values["disconnected_at"] = None  # back in service (accounts does the same)
        hand_over(uow, await replica_changed(uow, event.account_id, values, now))
        await reconcile(uow, event.account_id, now)


async def on_delinquency_changed(
    event: AccountDelinquencyChanged, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Lists and groups with a delinquency rule follow billing's verdict."""
    async with reconciling(uow):
        now = clock.now()
        hand_over(
            uow, await replica_changed(uow, event.account_id, {"delinquent": event.delinquent}, now)
        )
        await reconcile(uow, event.account_id, now)


async def on_service_added(event: AccountServiceAdded, envelope: Envelope, uow: UnitOfWork) -> None:
    """A data service joins the account: its RADIUS group and lists follow."""
    if event.service.kind is not ServiceKind.DATA:
        return
    async with reconciling(uow):
        now = clock.now()
        await replica_for_update(uow, event.account_id)
        if await uow.session.get(AccountDataService, event.account_service_id) is None:
            uow.session.add(
                AccountDataService(
                    account_service_id=event.account_service_id,
                    account_id=event.account_id,
                    service_id=event.service.service_id,
                    service_name=event.service.name,
                    download_kbps=event.service.download_kbps,
                    upload_kbps=event.service.upload_kbps,
                    added_at=event.added_at,
                )
            )
        await uow.session.flush()
        await ensure_service_group(uow, event)
        await reconcile(uow, event.account_id, now)


async def on_service_removed(
    event: AccountServiceRemoved, envelope: Envelope, uow: UnitOfWork
) -> None:
    """A data service leaves the account: its RADIUS group and lists follow."""
    if event.service.kind is not ServiceKind.DATA:
        return
    async with reconciling(uow):
        await uow.session.execute(
            delete(AccountDataService).where(
                AccountDataService.account_service_id == event.account_service_id
            )
        )
        await reconcile(uow, event.account_id, clock.now())


def _released_before(uow: UnitOfWork, disconnection_id: UUID) -> bool:
    """Released earlier in this transaction (its row is not written yet)."""
    pending: dict[UUID, dict[str, Any]] = uow.session.info.get(_RELEASES, {})
    return disconnection_id in pending


async def _write_releases(uow: UnitOfWork) -> None:
    """The transaction's NetworkRelease rows in one statement, before it commits."""
    pending: dict[UUID, dict[str, Any]] = uow.session.info.pop(_RELEASES, {})
    if pending:
        await uow.session.execute(insert(table_of(NetworkRelease)), list(pending.values()))


async def on_account_disconnected(
    event: AccountDisconnected, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Release everything the network holds for the account, once per disconnection (seed 004).

    Ends every IP assignment (history kept), removes list entries, DHCP reservations and
    RADIUS rows, and emits one AccountNetworkReleased, even when nothing was assigned, so
    the disconnect's progress completes.
    """
    async with reconciling(uow):
        session = uow.session
        now = clock.now()
        values = {**_status(event.status), "disconnected_at": event.disconnected_at}
        state = None
        if not _released_before(uow, event.disconnection_id):
            # Released in an earlier transaction: the replica's UPDATE checks it.
            released_already = exists().where(
                NetworkRelease.disconnection_id == event.disconnection_id
            )
            state = await update_replica(
                uow, event.account_id, values, now, unless=released_already
            )
        if state is None:
            log.info("network_release_repeated", disconnection_id=str(event.disconnection_id))
            return
        ips, dhcp_removed = await end_account_assignments(
            uow, event.account_id, now, reason="disconnected"
        )
        released = [
            ReleasedIp(assignment_id=ip.assignment_id, address=ip.address, pool_id=ip.pool_id)
            for ip in ips
        ]
        if state.uninventoried_macs:
            await session.execute(
                delete(UninventoriedMac).where(UninventoriedMac.account_id == event.account_id)
            )
        # Nothing is assigned any more, and a disconnected account is on no list.
        result = await reconcile_lists(uow, event.account_id, now, state=state, assignments=())
        usernames = await reconcile_radius(uow, event.account_id, state=state)
        # Written with the transaction's others in one statement (`_write_releases`).
        session.info.setdefault(_RELEASES, {})[event.disconnection_id] = {
            "disconnection_id": event.disconnection_id,
            "account_id": event.account_id,
            "released_at": now,
            "summary": {
                "released_ips": [ip.address for ip in released],
                "removed_list_entries": result.entries_removed,
                "removed_dhcp_reservations": dhcp_removed,
                "removed_radius_usernames": usernames,
            },
        }
        uow.before_commit(_write_releases)
        await uow.emit(
            events.AccountNetworkReleased(
                account_id=event.account_id,
                disconnection_id=event.disconnection_id,
                released_at=now,
                released_ips=released,
                removed_list_entries=result.entries_removed,
                removed_dhcp_reservations=dhcp_removed,
                removed_radius_usernames=usernames,
            ),
            subject=event.account_id,
        )
        log.info(
            "account_network_released",
            account_id=event.account_id,
            released_ips=len(released),
            removed_list_entries=result.entries_removed,
        )
