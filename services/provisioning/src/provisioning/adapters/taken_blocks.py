"""The blocks taken in a pool, searched by the database instead of read into Python.

A current assignment is a block of addresses stored with its range keys (`ipam.key`:
`range_first`, `range_last`, and `range_after`, the address after it). The current blocks of
a pool never overlap (the overlap check below keeps them apart), so ordered by `range_first`
they are ordered by `range_last` too. Two consequences make every search here a few seeks on
the index `ix_ip_assignments_current_range` (pool_id, range_first) instead of a read of the
pool:

- the only block starting before an address that can still cover it is the last block
  starting at or before it (`_covering_start`);
- the address after block `a` is taken iff some block starts exactly at `a.range_after`. So
  the lowest free address at or above X is X itself if nothing covers it, else the end of
  the run of back-to-back blocks starting with the one covering X: the first `range_after`
  going up at which no block starts.

That walk is as long as the run of back-to-back blocks it starts in, which in a pool filled
in order is the whole pool. So the pool keeps `search_from`, below which every usable address
is taken but for blocks released since; a released assignment is marked `pending_free`
(indexed while it is). The walk starts at the lower of `search_from` and the lowest pending
block. An assignment (under the pool's lock) raises `search_from` past what it has shown to
be taken and clears the pending marks of the blocks it covers. A release writes only its own
row, never the pool's, so it takes no lock in an order that could deadlock with an
assignment or with a consumer batch releasing in several pools. Were the start ever too
high, the search would hand out a free address that is not the lowest, never a taken one.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import ColumnElement, ScalarSelect, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from provisioning.adapters.tables import IpAssignment, IpPool
from provisioning.domain import ipam


def _current(pool_id: int, version: int) -> list[ColumnElement[bool]]:
    # `removed_at IS NULL` spelt out, so the planners pick the partial index.
    return [
        IpAssignment.pool_id == pool_id,
        IpAssignment.version == version,
        IpAssignment.removed_at.is_(None),
    ]


def _covering_start(pool_id: int, version: int, address: str) -> ScalarSelect[str]:
    """The start of the last current block starting at or before `address` (it is the only
    one that may cover it), NULL if there is none."""
    return (
        select(IpAssignment.range_first)
        .where(*_current(pool_id, version), IpAssignment.range_first <= address)
        .order_by(IpAssignment.range_first.desc())
        .limit(1)
        .scalar_subquery()
    )


async def overlapping(
    session: AsyncSession, pool_id: int, network: ipam.Network
) -> IpAssignment | None:
    """The earliest-assigned current assignment of the pool overlapping `network`, if any."""
    keys = ipam.range_keys(network)
    lowest = func.coalesce(_covering_start(pool_id, network.version, keys.first), keys.first)
    statement = (
        select(IpAssignment)
        .where(
            *_current(pool_id, network.version),
            IpAssignment.range_first >= lowest,  # lets the index bound the scan from below
            IpAssignment.range_first <= keys.last,
            IpAssignment.range_last >= keys.first,
        )
        .order_by(IpAssignment.assigned_at)
        .limit(1)
    )
    return (await session.scalars(statement)).first()


# -- the next free address --------------------------------------------------------------------


async def search_start(session: AsyncSession, pool_row: IpPool) -> int:
    """The lowest usable host address of the pool that may be free.

    Below the pool's `search_from` every usable address is taken, but for blocks released
    since (`pending_free`, set by `freed`).
    """
    first, _ = ipam.usable_range(ipam.parse_stored(pool_row.cidr))
    start = first if pool_row.search_from is None else ipam.unkey(pool_row.search_from)
    released = await session.scalar(
        select(IpAssignment.range_first)
        .where(IpAssignment.pool_id == pool_row.id, IpAssignment.pending_free)
        .order_by(IpAssignment.range_first)
        .limit(1)
    )
    if released is not None:
        start = min(start, ipam.unkey(released))
    return max(first, start)


def freed(assignment: IpAssignment) -> None:
    """Mark an ending assignment's block as possibly below its pool's search start.

    Only the assignment's own row is written, so a release takes no lock an assignment
    holds: the next assignment in the pool folds it in (`search_start`, `assigned`).
    """
    assignment.pending_free = True


async def assigned(
    session: AsyncSession,
    pool_row: IpPool,
    keys: ipam.RangeKeys,
    *,
    lowest_free: bool,
    start: int,
) -> None:
    """Account for a new block of the pool, `start` being `search_start` before it; called
    under the pool's lock (PostgreSQL), or SQLite's single writer.

    When the block was the lowest free address, or it covers the start, nothing is free below
    its end: the search start rises past it. Released blocks are marked taken again only
    where the new block covers them: one released below it after this transaction searched
    (PostgreSQL reads each statement afresh) is free, and clearing its mark would lose it
    below the raised start, where no search looks (found by concurrent releases and
    assignments: a pool answered "no free address" with addresses free).
    """
    first, last = ipam.unkey(keys.first), ipam.unkey(keys.last)
    taken_again = [
        IpAssignment.pool_id == pool_row.id,
        IpAssignment.pending_free,
        IpAssignment.range_last <= keys.last,
        # Implied by the line above; it lets SQLite seek its pending_free index.
        IpAssignment.range_first <= keys.last,
        IpAssignment.range_first >= keys.first,
    ]
    if (lowest_free or first <= start <= last) and (pool_row.search_from or "") < keys.after:
        pool_row.search_from = keys.after
    await session.execute(
        update(IpAssignment)
        .where(*taken_again)
        .values(pending_free=False)
        .execution_options(synchronize_session=False)
    )


async def lowest_free_address(
    session: AsyncSession, pool_id: int, pool: ipam.Network, start: int | None = None
) -> ipam.Network:
    """The pool's lowest free host address at or above `start` (the pool's first usable one
    if None); the pool's "no free address" Conflict if there is none.

    With every address below `start` taken, it agrees with `ipam.next_free(pool, taken)` (the
    property tests compare them).
    """
    first, last = ipam.usable_range(pool)
    start = first if start is None else max(first, start)
    if start > last:  # the search start of a full pool is past its end
        raise ipam.pool_exhausted(pool)
    start_key = ipam.key(start)
    covering = (
        await session.execute(
            select(IpAssignment.range_first, IpAssignment.range_after)
            .where(*_current(pool_id, pool.version), IpAssignment.range_first <= start_key)
            .order_by(IpAssignment.range_first.desc())
            .limit(1)
        )
    ).first()
    if covering is None or covering.range_after <= start_key:
        return _host(pool, ipam.unkey(start_key))
    # The blocks from the one covering the start up are back to back until one's successor
    # is missing; the address after that one is the lowest free. The run is followed one seek
    # per block (a recursive query): an anti-join of all blocks would let a planner that
    # expects few gaps hash the whole pool, however short the run.
    run = (
        select(IpAssignment.range_after)
        .where(*_current(pool_id, pool.version), IpAssignment.range_first == covering.range_first)
        .cte("run", recursive=True)
    )
    successor = aliased(IpAssignment)
    run = run.union_all(
        select(successor.range_after).where(
            successor.pool_id == pool_id,
            successor.version == pool.version,
            successor.removed_at.is_(None),
            successor.range_first == run.c.range_after,
        )
    )
    after = await session.scalar(select(func.max(run.c.range_after)))
    if after is None or ipam.unkey(after) > last:
        raise ipam.pool_exhausted(pool)
    return _host(pool, ipam.unkey(after))


async def next_free(
    session: AsyncSession, pool_row: IpPool, prefix_length: int | None = None
) -> ipam.Network:
    """The pool's lowest free address, or lowest free subnet of `prefix_length`.

    An address is found by the database (`lowest_free_address`) from the pool's search
    start. A subnet must be aligned to its size, which the range keys do not index: the
    pool's blocks are read as key pairs and walked by `ipam.first_free_block`.
    """
    pool = ipam.parse_stored(pool_row.cidr)
    prefix = prefix_length or pool.max_prefixlen
    if prefix == pool.max_prefixlen:
        return await lowest_free_address(
            session, pool_row.id, pool, await search_start(session, pool_row)
        )
    return ipam.first_free_block(pool, await taken(session, pool_row.id, pool.version), prefix)


def _host(pool: ipam.Network, address: int) -> ipam.Network:
    return ipaddress.ip_network((address, pool.max_prefixlen))


# -- reading the pool -------------------------------------------------------------------------


async def taken(session: AsyncSession, pool_id: int, version: int) -> list[tuple[int, int]]:
    """Every current block of the pool as (first, last) addresses, for the subnet search
    (`ipam.first_free_block`): one row of two keys each, no ORM objects."""
    rows = await session.execute(
        select(IpAssignment.range_first, IpAssignment.range_last).where(*_current(pool_id, version))
    )
    return [(ipam.unkey(first), ipam.unkey(last)) for first, last in rows]


async def used_addresses(session: AsyncSession, pool_id: int, version: int) -> int:
    """How many addresses of the pool current assignments hold.

    Hosts are counted by the database; subnets (stored as CIDRs, hosts as bare addresses,
    see `ipam.render`) are few and summed here.
    """
    is_subnet = IpAssignment.address.contains("/", autoescape=True)
    hosts = await session.scalar(
        select(func.count())
        .select_from(IpAssignment)
        .where(*_current(pool_id, version), ~is_subnet)
    )
    subnets = await session.scalars(
        select(IpAssignment.address).where(*_current(pool_id, version), is_subnet)
    )
    return int(hosts or 0) + sum(ipam.parse_stored(cidr).num_addresses for cidr in subnets)
