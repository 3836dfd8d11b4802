"""The database's search for taken and free addresses agrees with the pure reference.

`adapters/taken_blocks.py` finds overlaps and the next free address with index seeks from the
pool's search start; `ipam.next_free` and `ipam.overlapping` walk every taken block in Python.
A model-based property test drives the real handlers (assign the next free address or subnet,
assign an explicit one, soft or not, release, move) on SQLite and PostgreSQL and, after every
step, compares each outcome and the "what would be next" query with the reference.
"""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import UTC, datetime
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from backhaul_kit.errors import Conflict, DomainError, InvalidInput
from backhaul_kit.messaging.consumer import Outcome
from backhaul_kit.runtime import ServiceRuntime
from provisioning.adapters.tables import AccountReplica, IpAssignment, IpPool
from provisioning.bootstrap import bootstrap
from provisioning.config import ProvisioningSettings
from provisioning.domain import ipam
from provisioning.service_layer import queries
from provisioning.service_layer.assignments import (
    Assignee,
    AssignIp,
    assign_ip,
    move_assignment,
    remove_assignment,
)
from provisioning.service_layer.pools import create_pool

pytestmark = pytest.mark.integration

# Network and broadcast edges, point-to-point and single-address pools, and the two ends of
# each family's address space (the address after the last IPv6 address is 2**128).
POOLS = (
    "10.0.0.0/29",
    "10.0.1.0/30",
    "10.0.2.0/31",
    "10.0.3.7/32",
    "10.1.0.0/26",
    "0.0.0.0/30",
    "255.255.255.248/29",
    "2001:db8::/124",
    "2001:db8:1::/127",
    "2001:db8:2::5/128",
    "2001:db8:3::/120",
    "::/126",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124",
)
ACCOUNTS = (1, 2)
NOW = datetime(2026, 11, 22, tzinfo=UTC)

# ("next", how many bits shorter than a host, soft); ("fill", how many next free addresses);
# ("at", offset, bits shorter, soft); ("release", which); ("move", which)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("next"), st.sampled_from([0, 0, 0, 1, 2, 3]), st.booleans()),
        st.tuples(st.just("fill"), st.integers(min_value=1, max_value=40)),
        st.tuples(
            st.just("at"),
            st.integers(min_value=0, max_value=2**16),
            st.sampled_from([0, 0, 1, 2, 3]),
            st.booleans(),
        ),
        st.tuples(st.just("release"), st.integers(min_value=0, max_value=1000)),
        st.tuples(st.just("move"), st.integers(min_value=0, max_value=1000)),
    ),
    max_size=25,
)

Model = dict[UUID, tuple[ipam.Network, bool]]  # current assignment -> (block, soft)


async def _setup(runtime: ServiceRuntime) -> dict[str, int]:
    async with runtime.db.transaction() as session:
        session.add_all(
            AccountReplica(
                account_id=account_id,
                status_id=2,
                status_name="Active",
                activates=True,
                delinquent=False,
                updated_at=NOW,
            )
            for account_id in ACCOUNTS
        )
    pools = {}
    for number, cidr in enumerate(POOLS):
        pool = await create_pool(runtime.uow(), name=f"pool {number}", cidr=cidr)
        pools[cidr] = pool.id
    return pools


async def _reset(runtime: ServiceRuntime, pool_id: int) -> None:
    async with runtime.db.transaction() as session:
        await session.execute(delete(IpAssignment).where(IpAssignment.pool_id == pool_id))
        await session.execute(update(IpPool).where(IpPool.id == pool_id).values(search_from=None))


def _prefix(pool: ipam.Network, shorter: int) -> int:
    return max(pool.max_prefixlen - shorter, pool.prefixlen)


def _expected_next(pool: ipam.Network, model: Model, prefix: int) -> ipam.Network | DomainError:
    try:
        return ipam.next_free(pool, [network for network, _ in model.values()], prefix)
    except DomainError as error:
        return error


def _same(actual: object, expected: object) -> bool:
    if isinstance(expected, DomainError):
        return type(actual) is type(expected) and str(actual) == str(expected)
    return actual == expected


async def _attempt(coroutine):
    try:
        return await coroutine
    except DomainError as error:
        return error


async def _assign_next(runtime, pool_id, pool, model, shorter, soft) -> None:
    prefix = _prefix(pool, shorter)
    expected = _expected_next(pool, model, prefix)
    command = AssignIp(
        account_id=1,
        pool_id=pool_id,
        prefix_length=None if prefix == pool.max_prefixlen else prefix,
        soft=soft,
    )
    outcome = await _attempt(assign_ip(runtime.uow(), command, actor="test"))
    if isinstance(outcome, IpAssignment):
        assert not isinstance(expected, DomainError), (outcome.address, expected)
        assert outcome.address == ipam.render(expected)
        model[outcome.id] = (expected, soft)
    else:
        assert _same(outcome, expected), (outcome, expected)


async def _assign_at(runtime, pool_id, pool, model, offset, shorter, soft) -> None:
    prefix = _prefix(pool, shorter)
    size = 2 ** (pool.max_prefixlen - prefix)
    start = int(pool.network_address) + (offset % pool.num_addresses) // size * size
    network = ipaddress.ip_network((start, prefix))
    address = ipam.render(network)
    # The reference: parse, then the overlap rule over every current block.
    replaced: UUID | None = None
    expected: DomainError | None = None
    try:
        ipam.parse_assignment(address, pool)
        taken = {held: key for key, (held, _) in model.items()}
        clash = ipam.overlapping(network, taken)
        if clash is not None:
            key = taken[clash]
            if model[key][1] and not soft and clash == network:
                replaced = key
            else:
                expected = Conflict("taken")
    except InvalidInput as error:
        expected = error
    command = AssignIp(account_id=2, pool_id=pool_id, address=address, soft=soft)
    outcome = await _attempt(assign_ip(runtime.uow(), command, actor="test"))
    if expected is None:
        assert isinstance(outcome, IpAssignment), (address, outcome)
        if replaced is not None:
            del model[replaced]
        model[outcome.id] = (network, soft)
    elif isinstance(expected, Conflict):
        assert isinstance(outcome, Conflict), (address, outcome)
        assert f" {ipam.render(clash)} of pool" in str(outcome)
    else:
        assert _same(outcome, expected), (outcome, expected)


async def _release(runtime, model, which) -> None:
    if model:
        assignment_id = sorted(model)[which % len(model)]
        await remove_assignment(runtime.uow(), assignment_id, actor="test")
        del model[assignment_id]


async def _move(runtime, model, which) -> None:
    if model:
        assignment_id = sorted(model)[which % len(model)]
        new = await move_assignment(
            runtime.uow(),
            assignment_id,
            account_id=2,
            assignee=Assignee(),
            actor="test",
        )
        model[new.id] = model.pop(assignment_id)


async def _check(runtime: ServiceRuntime, pool_id: int, pool: ipam.Network, model: Model) -> None:
    for shorter in (0, 1, 3):
        prefix = _prefix(pool, shorter)
        expected = _expected_next(pool, model, prefix)
        answer = await _attempt(queries.next_free(runtime.uow(), pool_id, prefix))
        wanted = expected if isinstance(expected, DomainError) else ipam.render(expected)
        assert _same(answer, wanted), (prefix, answer, wanted)
    view = await queries.pool_detail(runtime.uow(), pool_id)
    assert view.usage.used == sum(network.num_addresses for network, _ in model.values())
    async with runtime.db.transaction() as session:
        current = await session.scalars(
            select(IpAssignment.address).where(
                IpAssignment.pool_id == pool_id, IpAssignment.removed_at.is_(None)
            )
        )
        assert sorted(current) == sorted(ipam.render(network) for network, _ in model.values())


async def _scenario(runtime: ServiceRuntime, pool_id: int, pool: ipam.Network, ops) -> None:
    await _reset(runtime, pool_id)
    model: Model = {}
    for op in ops:
        if op[0] == "next":
            await _assign_next(runtime, pool_id, pool, model, op[1], op[2])
        elif op[0] == "fill":
            for _ in range(op[1]):
                await _assign_next(runtime, pool_id, pool, model, 0, False)
        elif op[0] == "at":
            await _assign_at(runtime, pool_id, pool, model, op[1], op[2], op[3])
        elif op[0] == "release":
            await _release(runtime, model, op[1])
        else:
            await _move(runtime, model, op[1])
        await _check(runtime, pool_id, pool, model)


def _runtime(database_url: str) -> ServiceRuntime:
    runtime = bootstrap(
        ProvisioningSettings(
            database_url=database_url,
            kafka_bootstrap_servers="127.0.0.1:1",  # events stay in the outbox
            kafka_topic_prefix="t.",
        )
    )
    runtime.migrate()
    return runtime


def test_the_database_search_agrees_with_the_reference(database_url):
    runner = asyncio.Runner()
    runtime = _runtime(database_url)
    pools = runner.run(_setup(runtime))

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(cidr=st.sampled_from(POOLS), ops=OPERATIONS)
    def agrees(cidr, ops):
        note(f"pool {cidr}, operations {ops}")
        runner.run(_scenario(runtime, pools[cidr], ipaddress.ip_network(cidr), ops))

    try:
        agrees()
    finally:
        runner.run(runtime.db.dispose())
        runner.close()


# -- through the API --------------------------------------------------------------------------


async def _post(client, path, body=None, status=201):
    response = await client.post(path, json=body or {})
    assert response.status_code == status, response.text
    return response.json()


async def _next_free(client, pool_id):
    response = await client.get(f"/ip-pools/{pool_id}/next-free")
    return response.json()["address"] if response.status_code == 200 else response.status_code


async def test_a_full_pool_refuses_and_released_addresses_come_back_lowest_first(local_service, ev):
    runtime, client = local_service
    for account_id in (51, 52):
        await ev.deliver(runtime, ev.created(account_id))
    pool = await _post(client, "/ip-pools", {"name": "small", "cidr": "10.60.0.0/26"})
    for expected in range(1, 63):
        account_id = 51 if expected <= 10 else 52
        got = await _post(client, f"/accounts/{account_id}/ip-assignments", {"pool_id": pool["id"]})
        assert got["address"] == f"10.60.0.{expected}"
    full = await _post(client, "/accounts/52/ip-assignments", {"pool_id": pool["id"]}, status=409)
    assert full["message"] == "pool 10.60.0.0/26 has no free address left"
    assert await _next_free(client, pool["id"]) == 409

    # A disconnection releases .1-.10 and an API call .30: the lowest come back first.
    assert await ev.deliver(runtime, ev.disconnected(51)) == Outcome.HANDLED
    current = await client.get("/accounts/52/ip-assignments")
    thirty = next(a for a in current.json() if a["address"] == "10.60.0.30")
    assert (await client.delete(f"/ip-assignments/{thirty['id']}")).status_code == 200
    assert await _next_free(client, pool["id"]) == "10.60.0.1"
    handed_out = [
        (await _post(client, "/accounts/52/ip-assignments", {"pool_id": pool["id"]}))["address"]
        for _ in range(11)
    ]
    assert handed_out == [f"10.60.0.{host}" for host in (*range(1, 11), 30)]
    assert await _next_free(client, pool["id"]) == 409
    assert (await client.get(f"/ip-pools/{pool['id']}")).json()["used"] == 62


async def test_releases_racing_assignments_leave_the_search_start_right(local_service, ev):
    """Removals (which lower the pool's search start at commit) interleaved with next-free
    assignments (which raise it under the pool's lock): afterwards "next free" is still the
    lowest free address, and no request failed (a lock-order deadlock would be a 500).

    The pool has room for every assignment even if no removal lands first (20 held + 12 of
    62): with a /27 (30 usable) the test raced on capacity too, and failed whenever two of
    the assignments beat the removals to the account's lock."""
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(61))
    pool = await _post(client, "/ip-pools", {"name": "race", "cidr": "10.61.0.0/26"})
    held = [
        await _post(client, "/accounts/61/ip-assignments", {"pool_id": pool["id"]})
        for _ in range(20)
    ]
    doomed = held[2:20:2]

    async def remove(assignment):
        response = await client.delete(f"/ip-assignments/{assignment['id']}")
        return response.status_code

    async def assign():
        response = await client.post("/accounts/61/ip-assignments", json={"pool_id": pool["id"]})
        return response.status_code

    codes = await asyncio.gather(*(remove(a) for a in doomed), *(assign() for _ in range(12)))
    assert sorted(set(codes)) == [200, 201], codes
    current = (await client.get("/accounts/61/ip-assignments")).json()
    addresses = [ipaddress.ip_network(a["address"]) for a in current]
    assert len(addresses) == len(set(addresses)) == 20 - len(doomed) + 12
    expected = ipam.next_free(ipaddress.ip_network("10.61.0.0/26"), addresses)
    assert await _next_free(client, pool["id"]) == ipam.render(expected)
