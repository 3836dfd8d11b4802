import ipaddress

import pytest

from backhaul_kit.errors import InvalidInput
from provisioning.domain.rules import (
    AccountFacts,
    AssigneeKind,
    MembershipRule,
    assignment_replies,
    normalise_mac,
    provisioning_of,
    rate_limit_attributes,
    reply_attribute,
    routeros_script,
)

ACTIVE = AccountFacts(status_id=2, activates=True)


def test_an_account_gets_only_an_address_list_entry():
    rules = provisioning_of(AssigneeKind.ACCOUNT)
    assert (rules.address_list, rules.dhcp_reservation, rules.radius_reply) == (True, False, False)


def test_an_inventory_mac_gets_a_dhcp_reservation_and_an_entry():
    rules = provisioning_of(AssigneeKind.INVENTORY_ITEM)
    assert (rules.address_list, rules.dhcp_reservation, rules.radius_reply) == (True, True, False)
    assert rules.mac_is_temporary is False


def test_a_radius_account_gets_reply_attributes_only():
    rules = provisioning_of(AssigneeKind.RADIUS_ACCOUNT)
    assert (rules.address_list, rules.dhcp_reservation, rules.radius_reply) == (False, False, True)


def test_an_uninventoried_mac_is_provisioned_like_an_inventory_mac_but_temporarily():
    loose, item = (
        provisioning_of(AssigneeKind.UNINVENTORIED_MAC),
        provisioning_of(AssigneeKind.INVENTORY_ITEM),
    )
    assert (loose.address_list, loose.dhcp_reservation) == (
        item.address_list,
        item.dhcp_reservation,
    )
    assert loose.mac_is_temporary is True


@pytest.mark.parametrize(
    "spelling", ["aa:bb:cc:00:11:22", "AA-BB-CC-00-11-22", "aabb.cc00.1122", " aabbcc001122 "]
)
def test_macs_are_normalised(spelling):
    assert normalise_mac(spelling) == "AA:BB:CC:00:11:22"


@pytest.mark.parametrize("bad", ["aa:bb:cc:00:11", "gg:bb:cc:00:11:22", "", "aa:bb:cc:00:11:22:33"])
def test_malformed_macs_are_refused(bad):
    with pytest.raises(InvalidInput, match="malformed MAC"):
        normalise_mac(bad)


def test_rules_on_status_data_service_and_delinquency():
    activating = MembershipRule.from_dict({"activating": True})
    vacation = MembershipRule.from_dict({"status_ids": [9], "service_ids": [30]})
    delinquent = MembershipRule.from_dict({"delinquent": True})
    on_vacation = AccountFacts(status_id=9, activates=True, data_service_ids=frozenset({30}))
    assert activating.matches(ACTIVE) and activating.matches(on_vacation)
    assert vacation.matches(on_vacation) and not vacation.matches(ACTIVE)
    assert not delinquent.matches(ACTIVE)
    assert delinquent.matches(AccountFacts(status_id=2, activates=True, delinquent=True))
    disconnected = AccountFacts(status_id=3, activates=False, disconnected=True)
    assert not MembershipRule().matches(disconnected)
    assert not MembershipRule().matches(AccountFacts(status_id=None, activates=None))


def test_rules_round_trip_and_refuse_nonsense():
    raw = {"activating": False, "status_ids": [3, 1], "data_service": True}
    assert MembershipRule.from_dict(raw).to_dict() == {
        "activating": False,
        "status_ids": [1, 3],
        "data_service": True,
    }
    with pytest.raises(InvalidInput, match="unknown rule field"):
        MembershipRule.from_dict({"speed": 5})
    with pytest.raises(InvalidInput, match="status_ids"):
        MembershipRule.from_dict({"status_ids": ["Active"]})
    with pytest.raises(InvalidInput, match="activating"):
        MembershipRule.from_dict({"activating": "yes"})


def test_radius_replies_from_pool_address_and_routed_subnet():
    assigned = [ipaddress.ip_network("10.30.0.8/29"), ipaddress.ip_network("100.64.0.7/32")]
    replies = [(r.attribute, r.value) for r in assignment_replies(assigned)]
    # The subnet's next hop is the Framed-IP-Address (seed 003).
    assert replies == [
        ("Framed-IP-Address", "100.64.0.7"),
        ("Framed-Route", "10.30.0.8/29 100.64.0.7 1"),
    ]
    alone = assignment_replies([ipaddress.ip_network("10.30.0.8/29")])
    assert [(r.attribute, r.value) for r in alone] == [("Framed-Route", "10.30.0.8/29 0.0.0.0 1")]


def test_rate_limits_come_from_the_service_speeds():
    replies = {r.attribute: r.value for r in rate_limit_attributes(100_000, 20_000)}
    assert replies["Mikrotik-Rate-Limit"] == "20000k/100000k"
    assert replies["WISPr-Bandwidth-Max-Down"] == "100000000"
    assert rate_limit_attributes(None, 1000) == []


def test_reply_attributes_are_checked():
    with pytest.raises(InvalidInput, match="operator"):
        reply_attribute("Mikrotik-Rate-Limit", "==", "1k/1k")
    with pytest.raises(InvalidInput, match="attribute name"):
        reply_attribute("Rate Limit; DROP", ":=", "1k/1k")


def test_routeros_script_replaces_only_its_own_entries():
    script = routeros_script('vac"ation', [("2001:db8::1", 4), ("10.20.0.5", 3)])
    lines = script.splitlines()
    assert 'comment~"^backhaul:"' in lines[1]
    assert lines[-2] == (
        '/ip firewall address-list add list="vac\\"ation" address=10.20.0.5 '
        'comment="backhaul:account=3"'
    )
    assert lines[-1].startswith('/ipv6 firewall address-list add list="vac\\"ation" address=2001')
