import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backhaul_kit.errors import Conflict, InvalidInput
from provisioning.domain import ipam


def net(value: str) -> ipam.Network:
    return ipaddress.ip_network(value)


@pytest.mark.parametrize("bad", ["10.0.0.300/24", "10.0.0.1/24", "10.0.0.0", "banana", "::1/129"])
def test_malformed_or_sloppy_cidrs_are_refused(bad):
    with pytest.raises(InvalidInput, match="malformed CIDR"):
        ipam.parse_pool_cidr(bad)


def test_ipv4_pools_keep_network_and_broadcast_out():
    pool = ipam.parse_pool_cidr("10.20.0.0/24")
    assert ipam.pool_size(pool) == 254
    assert str(ipam.next_free(pool, [])) == "10.20.0.1/32"
    with pytest.raises(InvalidInput, match="broadcast"):
        ipam.parse_assignment("10.20.0.255", pool)
    with pytest.raises(InvalidInput, match="network address"):
        ipam.parse_assignment("10.20.0.0", pool)
    assert ipam.pool_size(ipam.parse_pool_cidr("10.9.0.0/31")) == 2


def test_ipv6_pools_use_every_address():
    pool = ipam.parse_pool_cidr("2001:db8::/126")
    assert ipam.pool_size(pool) == 4
    assert ipam.render(ipam.next_free(pool, [])) == "2001:db8::"


def test_addresses_outside_the_pool_or_of_the_other_family_are_refused():
    pool = net("10.20.0.0/24")
    with pytest.raises(InvalidInput, match="outside the pool"):
        ipam.parse_assignment("10.21.0.1", pool)
    with pytest.raises(InvalidInput, match="IPv6"):
        ipam.parse_assignment("2001:db8::1", pool)
    with pytest.raises(InvalidInput, match="malformed address"):
        ipam.parse_assignment("10.20.0.1/33", pool)


def test_next_free_skips_taken_addresses_and_subnets():
    pool = net("10.20.0.0/24")
    taken = [net("10.20.0.1/32"), net("10.20.0.2/31"), net("10.20.0.8/29")]
    assert ipam.render(ipam.next_free(pool, taken)) == "10.20.0.4"
    # A /29 is aligned: the first free one after 10.20.0.8/29 is 10.20.0.16/29.
    assert ipam.render(ipam.next_free(pool, taken, 29)) == "10.20.0.16/29"
    with pytest.raises(InvalidInput, match="does not fit"):
        ipam.next_free(pool, taken, 23)


def test_a_full_pool_says_so():
    pool = net("10.20.0.0/30")
    with pytest.raises(Conflict, match="no free address"):
        ipam.next_free(pool, [net("10.20.0.1/32"), net("10.20.0.2/32")])


def test_next_free_in_a_huge_ipv6_pool_is_immediate():
    pool = net("2001:db8::/32")
    taken = [net("2001:db8::/64")]
    assert ipam.render(ipam.next_free(pool, taken, 64)) == "2001:db8:0:1::/64"


def test_overlaps_and_utilisation():
    pool = net("10.20.0.0/24")
    taken = [net("10.20.0.8/29"), net("10.20.0.1/32")]
    assert ipam.overlapping(net("10.20.0.12/32"), taken) == net("10.20.0.8/29")
    assert ipam.overlapping(net("10.20.0.16/32"), taken) is None
    usage = ipam.utilisation(pool, taken)
    assert (usage.size, usage.used, usage.free, usage.percent) == (254, 9, 245, 3.54)
    assert ipam.pools_overlap(net("10.20.0.128/25"), [("customers", pool)]) == "customers"
    assert ipam.pools_overlap(net("10.21.0.0/24"), [("customers", pool)]) is None


@given(st.sets(st.integers(min_value=1, max_value=254), max_size=200))
def test_next_free_never_returns_a_taken_address(taken_hosts):
    pool = net("10.0.0.0/24")
    taken = [ipaddress.ip_network(f"10.0.0.{h}/32") for h in taken_hosts]
    if len(taken_hosts) == 254:
        with pytest.raises(Conflict):
            ipam.next_free(pool, taken)
        return
    found = ipam.next_free(pool, taken)
    assert found not in taken
    assert int(found.network_address) - int(pool.network_address) == min(
        set(range(1, 255)) - taken_hosts
    )


@given(
    st.integers(min_value=0, max_value=2**128),
    st.integers(min_value=0, max_value=2**128),
)
def test_keys_sort_as_the_addresses_do(a, b):
    assert len(ipam.key(a)) == len(ipam.key(b)) == ipam.KEY_DIGITS
    assert (ipam.key(a) < ipam.key(b)) == (a < b)
    assert ipam.unkey(ipam.key(a)) == a


def test_range_keys_of_a_host_a_subnet_and_the_end_of_the_address_space():
    host = ipam.range_keys(net("10.0.0.255/32"))
    assert (host.first, host.last, host.after) == (
        "00000000000000000000000000a0000ff",
        "00000000000000000000000000a0000ff",
        "00000000000000000000000000a000100",
    )
    subnet = ipam.range_keys(net("10.0.0.8/29"))
    assert (ipam.unkey(subnet.first), ipam.unkey(subnet.after)) == (0x0A000008, 0x0A000010)
    top = ipam.range_keys(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"))
    assert top.after == "1" + "0" * 32 and top.last < top.after


def test_usable_range_keeps_hosts_off_the_network_and_broadcast_addresses():
    start = int(ipaddress.ip_address("10.0.0.0"))
    assert ipam.usable_range(net("10.0.0.0/24")) == (start + 1, start + 254)
    assert ipam.usable_range(net("10.0.0.0/24"), 30) == (start, start + 255)
    assert ipam.usable_range(net("10.0.0.0/31")) == (start, start + 1)
    assert ipam.usable_range(net("10.0.0.0/32")) == (start, start)
    with pytest.raises(InvalidInput, match="does not fit"):
        ipam.usable_range(net("10.0.0.0/24"), 23)


def test_the_reference_walks_key_pairs_as_it_walks_networks():
    pool = net("2001:db8::/120")
    taken = [net("2001:db8::/127"), net("2001:db8::4/126"), net("2001:db8::2/128")]
    pairs = [(int(t.network_address), int(t.broadcast_address)) for t in taken]
    for prefix in (128, 127, 126, 124):
        assert ipam.first_free_block(pool, pairs, prefix) == ipam.next_free(pool, taken, prefix)
    assert ipam.render(ipam.next_free(pool, taken)) == "2001:db8::3"
