"""Provisioning's rules, handler by handler, on a SQLite file: no broker, no HTTP.

Events are handed to the `on_*` handlers the way the consumer does (inside its open unit of
work); commands run as the API runs them. Each test checks what the rules say the network
holds afterwards and what was emitted.
"""

from __future__ import annotations

from uuid import uuid4

from sqlalchemy import func, select

from backhaul_contracts import Envelope, decode
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
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.testing import Handlers
from provisioning.adapters.tables import (
    AddressListChange,
    AddressListEntry,
    DhcpReservation,
    IpAssignment,
    NetworkRelease,
    RadCheck,
    RadGroupReply,
    RadReply,
    RadUserGroup,
)
from provisioning.domain.rules import AssigneeKind
from provisioning.service_layer import (
    address_lists,
    assignments,
    pools,
    radius,
    replica,
)

ON = {
    AccountCreated: replica.on_account_created,
    AccountStatusChanged: replica.on_status_changed,
    AccountDisconnected: replica.on_account_disconnected,
    AccountServiceAdded: replica.on_service_added,
    AccountServiceRemoved: replica.on_service_removed,
    AccountDelinquencyChanged: replica.on_delinquency_changed,
}


async def _handle(handlers: Handlers, env: Envelope) -> list[str]:
    """Deliver one event to its handler; the types of what it emitted, in order."""
    _, event = decode(env.to_bytes())
    emitted = await handlers.handle(ON[type(event)], event, subject=env.subject)
    return [e.event_type for e in emitted]


async def _call(handlers: Handlers, handler, *args, **kwargs):
    result, _ = await handlers.call(handler, *args, **kwargs)
    return result


async def _entries(handlers: Handlers, list_id: int) -> list[str]:
    async with handlers.runtime.db.transaction() as session:
        rows = await session.scalars(
            select(AddressListEntry.address).where(
                AddressListEntry.address_list_id == list_id, AddressListEntry.valid_to.is_(None)
            )
        )
        return sorted(rows)


async def _feed(handlers: Handlers) -> list[tuple[int, int, str, str]]:
    async with handlers.runtime.db.transaction() as session:
        rows = await session.execute(
            select(
                AddressListChange.seq,
                AddressListChange.address_list_id,
                AddressListChange.action,
                AddressListChange.address,
            ).order_by(AddressListChange.seq)
        )
        return [tuple(r) for r in rows]


async def _radius_rows(handlers: Handlers, username: str) -> dict[str, list[tuple]]:
    async with handlers.runtime.db.transaction() as session:
        found: dict[str, list[tuple]] = {}
        for table in (RadCheck, RadReply):
            rows = await session.execute(
                select(table.attribute, table.value).where(table.username == username)
            )
            found[table.__tablename__] = sorted(tuple(r) for r in rows)
        groups = await session.execute(
            select(RadUserGroup.groupname, RadUserGroup.priority).where(
                RadUserGroup.username == username
            )
        )
        found["radusergroup"] = sorted(tuple(r) for r in groups)
        return found


async def _count(handlers: Handlers, table) -> int:
    async with handlers.runtime.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_a_status_change_moves_the_ips_between_the_lists_naming_the_statuses(handlers, ev):
    await _handle(handlers, ev.created(1, ev.ACTIVE))
    pool = await _call(handlers, pools.create_pool, name="p", cidr="10.20.0.0/24")
    active = await _call(
        handlers, address_lists.create_address_list, name="active", rule={"status_ids": [2]}
    )
    suspended = await _call(
        handlers, address_lists.create_address_list, name="suspended", rule={"status_ids": [7]}
    )
    other = await _call(
        handlers, address_lists.create_address_list, name="other", rule={"status_ids": [9]}
    )
    for address in ("10.20.0.1", "10.20.0.2"):
        command = assignments.AssignIp(account_id=1, pool_id=pool.id, address=address)
        await _call(handlers, assignments.assign_ip, command, actor="test")
    assert await _entries(handlers, active.id) == ["10.20.0.1", "10.20.0.2"]

    emitted = await _handle(handlers, ev.status_changed(1, ev.ACTIVE, ev.SUSPENDED))

    assert await _entries(handlers, active.id) == []
    assert await _entries(handlers, suspended.id) == ["10.20.0.1", "10.20.0.2"]
    assert await _entries(handlers, other.id) == []
    assert emitted == ["AddressListEntryRemoved"] * 2 + ["AddressListEntryAdded"] * 2
    # The router feed: the adds of the assignments, then this event's removes before its adds.
    assert await _feed(handlers) == [
        (1, active.id, "add", "10.20.0.1"),
        (2, active.id, "add", "10.20.0.2"),
        (3, active.id, "remove", "10.20.0.1"),
        (4, active.id, "remove", "10.20.0.2"),
        (5, suspended.id, "add", "10.20.0.1"),
        (6, suspended.id, "add", "10.20.0.2"),
    ]


async def test_a_disconnect_releases_everything_once_and_keeps_the_history(handlers, ev):
    await _handle(handlers, ev.created(2))
    server = await _call(handlers, pools.create_dhcp_server, "dhcp", None)
    pool = await _call(
        handlers, pools.create_pool, name="p", cidr="10.20.0.0/24", dhcp_server_ids=[server.id]
    )
    everyone = await _call(handlers, address_lists.create_address_list, name="all", rule={})
    login = await _call(handlers, radius.create_radius_account, 2, username="ada", password="pw")
    for assignee in (
        assignments.Assignee(),
        assignments.Assignee(kind=AssigneeKind.UNINVENTORIED_MAC, mac="aa:bb:cc:00:11:22"),
        assignments.Assignee(kind=AssigneeKind.RADIUS_ACCOUNT, radius_account_id=login.id),
    ):
        command = assignments.AssignIp(account_id=2, pool_id=pool.id, assignee=assignee)
        await _call(handlers, assignments.assign_ip, command, actor="test")
    assert await _entries(handlers, everyone.id) == ["10.20.0.1", "10.20.0.2"]
    assert await _count(handlers, DhcpReservation) == 1
    assert (await _radius_rows(handlers, "ada"))["radreply"] == [("Framed-IP-Address", "10.20.0.3")]

    disconnection = ev.disconnected(2)
    emitted = await _handle(handlers, disconnection)

    assert sorted(emitted) == sorted(
        ["IpReleased"] * 3 + ["AddressListEntryRemoved"] * 2 + ["AccountNetworkReleased"]
    )
    assert await _entries(handlers, everyone.id) == []
    assert await _count(handlers, DhcpReservation) == 0
    assert await _radius_rows(handlers, "ada") == {
        "radcheck": [],
        "radreply": [],
        "radusergroup": [],
    }
    async with handlers.runtime.db.transaction() as session:
        history = (
            await session.execute(select(IpAssignment.address, IpAssignment.removed_reason))
        ).all()
    assert sorted(tuple(h) for h in history) == [
        ("10.20.0.1", "disconnected"),
        ("10.20.0.2", "disconnected"),
        ("10.20.0.3", "disconnected"),
    ]

    # The same disconnection again (each delivery is a new envelope, as a resend): a no-op.
    feed = await _feed(handlers)
    assert await _handle(handlers, disconnection) == []
    assert await _feed(handlers) == feed
    assert await _count(handlers, NetworkRelease) == 1


async def test_a_disconnect_with_nothing_assigned_still_announces_one_release(handlers, ev):
    await _handle(handlers, ev.created(3))
    disconnection_id = uuid4()

    assert await _handle(handlers, ev.disconnected(3, disconnection_id)) == [
        "AccountNetworkReleased"
    ]
    assert await _handle(handlers, ev.disconnected(3, disconnection_id)) == []


async def test_a_data_service_added_and_removed_changes_the_radius_group(handlers, ev):
    await _handle(handlers, ev.created(4))
    await _call(handlers, radius.create_radius_account, 4, username="bob", password="pw")
    speed = ev.data_service(40, 50_000, 10_000)

    await _handle(handlers, ev.service_added(4, 400, speed))
    assert (await _radius_rows(handlers, "bob"))["radusergroup"] == [("service-40", 10)]
    async with handlers.runtime.db.transaction() as session:
        replies = await session.scalars(
            select(RadGroupReply.value).where(
                RadGroupReply.groupname == "service-40",
                RadGroupReply.attribute == "Mikrotik-Rate-Limit",
            )
        )
        assert list(replies) == ["10000k/50000k"]

    await _handle(handlers, ev.service_removed(4, 400, speed))
    assert (await _radius_rows(handlers, "bob"))["radusergroup"] == []
    assert (await _radius_rows(handlers, "bob"))["radcheck"] == [("Cleartext-Password", "pw")]


class _DeadLetters:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_and_wait(self, topic: str, value: bytes | None = None, **_: object) -> None:
        self.sent.append(topic)


async def test_a_consumer_batch_writes_the_feed_once_in_event_order(handlers, ev, monkeypatch):
    """A polled batch runs in one transaction and writes the feed at its end; if an event
    fails, the batch is replayed one event at a time and the failed one's changes, feed
    notes included, are not kept."""
    pool = await _call(handlers, pools.create_pool, name="p", cidr="10.20.0.0/24")
    suspended = await _call(
        handlers, address_lists.create_address_list, name="suspended", rule={"status_ids": [7]}
    )
    for account_id in (11, 12, 13):
        await _handle(handlers, ev.created(account_id))
        command = assignments.AssignIp(account_id=account_id, pool_id=pool.id)
        await _call(handlers, assignments.assign_ip, command, actor="test")
    consumer = handlers.runtime.consumer
    consumer.dead_letters = _DeadLetters()
    suspend = [ev.status_changed(a, ev.ACTIVE, ev.SUSPENDED) for a in (11, 12, 13)]
    records = [Record(topic="x", value=env.to_bytes(), offset=n) for n, env in enumerate(suspend)]

    real_reconcile = replica.reconcile

    async def failing_for_12(uow, account_id, now):
        result = await real_reconcile(uow, account_id, now)  # notes its feed changes first
        if account_id == 12:
            raise RuntimeError("account 12 fails")
        return result

    monkeypatch.setattr(replica, "reconcile", failing_for_12)
    outcomes = await consumer.process_batch(records)

    assert outcomes == [Outcome.HANDLED, Outcome.DEAD_LETTERED, Outcome.HANDLED]
    assert await _entries(handlers, suspended.id) == ["10.20.0.1", "10.20.0.3"]
    assert await _feed(handlers) == [
        (1, suspended.id, "add", "10.20.0.1"),
        (2, suspended.id, "add", "10.20.0.3"),
    ]

    monkeypatch.setattr(replica, "reconcile", real_reconcile)
    resumed = [ev.status_changed(a, ev.SUSPENDED, ev.ACTIVE) for a in (11, 13)] + [
        ev.status_changed(12, ev.ACTIVE, ev.SUSPENDED)
    ]
    outcomes = await consumer.process_batch(
        [Record(topic="x", value=env.to_bytes(), offset=n) for n, env in enumerate(resumed)]
    )
    assert outcomes == [Outcome.HANDLED] * 3
    assert await _feed(handlers) == [
        (1, suspended.id, "add", "10.20.0.1"),
        (2, suspended.id, "add", "10.20.0.3"),
        (3, suspended.id, "remove", "10.20.0.1"),
        (4, suspended.id, "remove", "10.20.0.3"),
        (5, suspended.id, "add", "10.20.0.2"),
    ]


async def test_a_disconnection_repeated_in_one_consumer_batch_is_released_once(handlers, ev):
    # The release rows of a batch are written at its commit: a resend within the same batch
    # must still find the first.
    pool = await _call(handlers, pools.create_pool, name="p", cidr="10.20.0.0/24")
    everyone = await _call(handlers, address_lists.create_address_list, name="all", rule={})
    await _handle(handlers, ev.created(21))
    command = assignments.AssignIp(account_id=21, pool_id=pool.id)
    await _call(handlers, assignments.assign_ip, command, actor="test")
    disconnection_id = uuid4()
    twice = [ev.disconnected(21, disconnection_id), ev.disconnected(21, disconnection_id)]

    outcomes = await handlers.runtime.consumer.process_batch(
        [Record(topic="x", value=env.to_bytes(), offset=n) for n, env in enumerate(twice)]
    )

    assert outcomes == [Outcome.HANDLED] * 2
    assert await _count(handlers, NetworkRelease) == 1
    assert await _entries(handlers, everyone.id) == []
    assert await _feed(handlers) == [
        (1, everyone.id, "add", "10.20.0.1"),
        (2, everyone.id, "remove", "10.20.0.1"),
    ]
    async with handlers.runtime.db.transaction() as session:
        summary = await session.scalar(select(NetworkRelease.summary))
    assert summary == {
        "released_ips": ["10.20.0.1"],
        "removed_list_entries": 1,
        "removed_dhcp_reservations": 0,
        "removed_radius_usernames": [],
    }
