"""IP address management: pools, subnets, the next free address, utilisation. Pure, no I/O.

An assignment holds either one address (a host: /32 or /128) or a subnet routed to the
assignee (e.g. 10.30.0.8/29). Within a pool no two current assignments may overlap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from backhaul_kit.errors import Conflict, InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_pool_cidr(cidr: str) -> Network:
    """A pool's CIDR in its canonical form; host bits set or a malformed value are refused."""
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as error:
        raise InvalidInput(f"malformed CIDR {cidr!r}: {error}") from None
    if "/" not in cidr:
        raise InvalidInput(f"malformed CIDR {cidr!r}: a prefix length like /24 is required")
    return network


def is_host(network: Network) -> bool:
    """A single address (/32 or /128) rather than a subnet."""
    return network.prefixlen == network.max_prefixlen


def _has_network_and_broadcast(pool: Network) -> bool:
    # IPv4 pools larger than a point-to-point /31 reserve their network and broadcast address.
    return pool.version == 4 and pool.prefixlen < 31


def pool_size(pool: Network) -> int:
    """How many addresses of the pool can be assigned."""
    reserved = 2 if _has_network_and_broadcast(pool) else 0
    return pool.num_addresses - reserved


def parse_assignment(value: str, pool: Network) -> Network:
    """An address (`10.0.0.5`) or a subnet (`10.0.0.8/29`) requested inside `pool`."""
    text = value.strip()
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        raise InvalidInput(f"malformed address {value!r}: {error}") from None
    if network.version != pool.version:
        raise InvalidInput(
            f"address {value!r} is IPv{network.version} but pool {pool} is IPv{pool.version}"
        )
    if not network.subnet_of(pool):  # type: ignore[arg-type]
        raise InvalidInput(f"address {value!r} is outside the pool {pool}")
    if _has_network_and_broadcast(pool) and is_host(network):
        if network.network_address == pool.network_address:
            raise InvalidInput(f"address {value!r} is the network address of the pool {pool}")
        if network.network_address == pool.broadcast_address:
            raise InvalidInput(f"address {value!r} is the broadcast address of the pool {pool}")
    return network


def render(network: Network) -> str:
    """How an assignment is stored and shown: a bare address for a host, else the CIDR."""
    return str(network.network_address) if is_host(network) else str(network)


def parse_stored(value: str) -> Network:
    return ipaddress.ip_network(value, strict=True)


def overlapping(candidate: Network, taken: Iterable[Network]) -> Network | None:
    """The first taken address or subnet that the candidate overlaps, if any."""
    for other in taken:
        if other.version == candidate.version and candidate.overlaps(other):
            return other
    return None


# An address as a fixed-width hex string, so that the database orders and compares addresses
# as text in numeric order (on SQLite and PostgreSQL alike; the family is kept apart by the
# `version` column). 33 digits, not 32: the address after the last IPv6 address is 2**128.
KEY_DIGITS = 33


def key(address: int) -> str:
    """An address (or the one after a block) as the database stores and compares it."""
    return f"{address:0{KEY_DIGITS}x}"


def unkey(value: str) -> int:
    return int(value, 16)


@dataclass(frozen=True)
class RangeKeys:
    """A block's first and last address and the address after it, as stored keys."""

    first: str
    last: str
    after: str


def range_keys(network: Network) -> RangeKeys:
    first, last = int(network.network_address), int(network.broadcast_address)
    return RangeKeys(first=key(first), last=key(last), after=key(last + 1))


def usable_range(pool: Network, prefix_length: int | None = None) -> tuple[int, int]:
    """The first and last address a new block of `prefix_length` (a host if None) may use.

    A host never takes the network or broadcast address of an IPv4 pool that has them; a
    subnet is aligned to its size, so it never could hold just one of them.
    """
    prefix = prefix_length or pool.max_prefixlen
    if prefix < pool.prefixlen or prefix > pool.max_prefixlen:
        raise InvalidInput(
            f"prefix length /{prefix} does not fit in the pool {pool} (/{pool.prefixlen})"
        )
    start = int(pool.network_address)
    end = int(pool.broadcast_address)
    if _has_network_and_broadcast(pool) and prefix == pool.max_prefixlen:
        return start + 1, end - 1
    return start, end


def pool_exhausted(pool: Network, prefix_length: int | None = None) -> Conflict:
    """The error of a pool with no free block of the size asked for."""
    prefix = prefix_length or pool.max_prefixlen
    size = "address" if prefix == pool.max_prefixlen else f"/{prefix} subnet"
    return Conflict(f"pool {pool} has no free {size} left")


def first_free_block(
    pool: Network, blocks: Iterable[tuple[int, int]], prefix_length: int | None = None
) -> Network:
    """The lowest free block of `prefix_length` (a host if None) given the taken blocks as
    (first, last) address pairs; see `next_free`."""
    prefix = prefix_length or pool.max_prefixlen
    first, last = usable_range(pool, prefix)
    ordered = sorted(blocks)
    step = 2 ** (pool.max_prefixlen - prefix)
    start = int(pool.network_address)
    candidate = first
    index = 0
    while candidate + step - 1 <= last:
        while index < len(ordered) and ordered[index][1] < candidate:
            index += 1
        if index < len(ordered) and ordered[index][0] <= candidate + step - 1:
            # Overlaps a taken block: jump past it, aligned to the requested size.
            after = ordered[index][1] + 1
            candidate = after + (-(after - start) % step)
            continue
        return ipaddress.ip_network((candidate, prefix))
    raise pool_exhausted(pool, prefix)


def next_free(pool: Network, taken: Iterable[Network], prefix_length: int | None = None) -> Network:
    """The lowest free address (or free subnet of `prefix_length`) in the pool.

    Walks the pool in order, jumping past each taken block, so it stays fast in a large
    IPv6 pool with few assignments. The reference for the database's own search
    (adapters/taken_blocks.py), which finds the same address without reading every block.
    """
    return first_free_block(
        pool,
        (
            (int(t.network_address), int(t.broadcast_address))
            for t in taken
            if t.version == pool.version
        ),
        prefix_length,
    )


@dataclass(frozen=True)
class Utilisation:
    size: int
    used: int

    @property
    def free(self) -> int:
        return self.size - self.used

    @property
    def percent(self) -> float:
        return round(100 * self.used / self.size, 2) if self.size else 0.0


def utilisation(pool: Network, taken: Iterable[Network]) -> Utilisation:
    return Utilisation(size=pool_size(pool), used=sum(t.num_addresses for t in taken))


def pools_overlap(candidate: Network, existing: Iterable[tuple[str, Network]]) -> str | None:
    """The name of an existing pool the candidate overlaps, if any."""
    for name, network in existing:
        if network.version == candidate.version and candidate.overlaps(network):
            return name
    return None
