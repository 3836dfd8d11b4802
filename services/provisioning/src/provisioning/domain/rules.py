"""Rules of assignees, address-list membership and RADIUS replies (seeds 002 and 003)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from backhaul_kit.errors import InvalidInput
from provisioning.domain.ipam import Network, is_host


class AssigneeKind(StrEnum):
    """Who an IP is assigned to; each kind provisions something different (seed 003)."""

    ACCOUNT = "account"
    INVENTORY_ITEM = "inventory_item"
    RADIUS_ACCOUNT = "radius_account"
    UNINVENTORIED_MAC = "uninventoried_mac"


@dataclass(frozen=True)
class Provisioning:
    """What an assignment writes to the network."""

    address_list: bool
    dhcp_reservation: bool
    radius_reply: bool
    mac_is_temporary: bool


PROVISIONING: Mapping[AssigneeKind, Provisioning] = {
    # An account: only the address list is updated.
    AssigneeKind.ACCOUNT: Provisioning(True, False, False, False),
    # An inventory MAC: a DHCP reservation on every DHCP server of the pool, and the list.
    AssigneeKind.INVENTORY_ITEM: Provisioning(True, True, False, False),
    # A RADIUS account: user reply attributes only.
    AssigneeKind.RADIUS_ACCOUNT: Provisioning(False, False, True, False),
    # An uninventoried MAC: like an inventory MAC, but the MAC goes when its IP goes.
    AssigneeKind.UNINVENTORIED_MAC: Provisioning(True, True, False, True),
}


def provisioning_of(kind: AssigneeKind) -> Provisioning:
    return PROVISIONING[kind]


_MAC_HEX = re.compile(r"^[0-9a-f]{12}$")


def normalise_mac(value: str) -> str:
    """A MAC in any usual spelling (aa:bb.., AA-BB-.., aabb.ccdd.eeff) as `AA:BB:CC:DD:EE:FF`."""
    digits = re.sub(r"[\s:.\-]", "", value.strip().lower())
    if not _MAC_HEX.match(digits):
        raise InvalidInput(f"malformed MAC address {value!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).upper()


# -- address-list and RADIUS-group membership -------------------------------------------------


@dataclass(frozen=True)
class AccountFacts:
    """What provisioning knows of an account, from the events of accounts and billing."""

    status_id: int | None
    activates: bool | None
    delinquent: bool = False
    data_service_ids: frozenset[int] = field(default_factory=frozenset)
    disconnected: bool = False


@dataclass(frozen=True)
class MembershipRule:
    """Which accounts a list (or a RADIUS group) holds. Every criterion given must hold.

    - `activating`: the account's status activates it (true) or does not (false);
    - `status_ids`: the account is in one of these statuses;
    - `data_service`: the account has a data service (true) or has none (false);
    - `service_ids`: the account has one of these data services;
    - `delinquent`: billing says the account is delinquent (true) or not (false).
    An empty rule holds every account provisioning knows the status of.
    """

    activating: bool | None = None
    status_ids: frozenset[int] = frozenset()
    data_service: bool | None = None
    service_ids: frozenset[int] = frozenset()
    delinquent: bool | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MembershipRule:
        known = {"activating", "status_ids", "data_service", "service_ids", "delinquent"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(
                f"unknown rule field(s) {', '.join(unknown)}; "
                f"a rule may use {', '.join(sorted(known))}"
            )
        for flag in ("activating", "data_service", "delinquent"):
            if raw.get(flag) is not None and not isinstance(raw[flag], bool):
                raise InvalidInput(f"rule field {flag} must be true, false or null")
        for ids in ("status_ids", "service_ids"):
            values = raw.get(ids) or []
            if not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in values
            ):
                raise InvalidInput(f"rule field {ids} must be a list of integer ids")
        return cls(
            activating=raw.get("activating"),
            status_ids=frozenset(raw.get("status_ids") or ()),
            data_service=raw.get("data_service"),
            service_ids=frozenset(raw.get("service_ids") or ()),
            delinquent=raw.get("delinquent"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.activating is not None:
            out["activating"] = self.activating
        if self.status_ids:
            out["status_ids"] = sorted(self.status_ids)
        if self.data_service is not None:
            out["data_service"] = self.data_service
        if self.service_ids:
            out["service_ids"] = sorted(self.service_ids)
        if self.delinquent is not None:
            out["delinquent"] = self.delinquent
        return out

    def matches(self, facts: AccountFacts) -> bool:
        if facts.disconnected or facts.status_id is None:
            return False
        if self.activating is not None and bool(facts.activates) is not self.activating:
            return False
        if self.status_ids and facts.status_id not in self.status_ids:
            return False
        has_data = bool(facts.data_service_ids)
        if self.data_service is not None and has_data is not self.data_service:
            return False
        if self.service_ids and not (self.service_ids & facts.data_service_ids):
            return False
        return not (self.delinquent is not None and facts.delinquent is not self.delinquent)


# -- RADIUS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyAttribute:
    attribute: str
    op: str
    value: str


_ATTRIBUTE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-]{0,63}$")
REPLY_OPS = frozenset({"=", ":=", "+="})


def reply_attribute(attribute: str, op: str, value: str) -> ReplyAttribute:
    """A reply attribute as FreeRADIUS's SQL module reads it; refuses what it could not."""
    if not _ATTRIBUTE.match(attribute):
        raise InvalidInput(f"malformed RADIUS attribute name {attribute!r}")
    if op not in REPLY_OPS:
        raise InvalidInput(f"RADIUS reply operator {op!r} is not one of {sorted(REPLY_OPS)}")
    if not value or len(value) > 253:
        raise InvalidInput(f"RADIUS attribute {attribute} needs a value of 1 to 253 characters")
    return ReplyAttribute(attribute, op, value)


def rate_limit_attributes(
    download_kbps: int | None, upload_kbps: int | None
) -> list[ReplyAttribute]:
    """Rate-limit replies from a data service's speeds.

    MikroTik's `rx/tx` is seen from the router, so the customer's upload comes first;
    WISPr attributes are in bits per second for other vendors.
    """
    if not download_kbps or not upload_kbps:
        return []
    return [
        ReplyAttribute("Mikrotik-Rate-Limit", ":=", f"{upload_kbps}k/{download_kbps}k"),
        ReplyAttribute("WISPr-Bandwidth-Max-Down", ":=", str(download_kbps * 1000)),
        ReplyAttribute("WISPr-Bandwidth-Max-Up", ":=", str(upload_kbps * 1000)),
    ]


def assignment_replies(assigned: Iterable[Network]) -> list[ReplyAttribute]:
    """A RADIUS account's reply attributes for its assigned addresses and subnets (seed 003).

    An address from a pool is a Framed-IP-Address; a subnet is a Framed-Route whose next
    hop is the Framed-IP-Address when the account has one.
    """
    networks = sorted(assigned, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    hosts4 = [n for n in networks if n.version == 4 and is_host(n)]
    hosts6 = [n for n in networks if n.version == 6 and is_host(n)]
    next_hop = str(hosts4[0].network_address) if hosts4 else "0.0.0.0"
    replies: list[ReplyAttribute] = []
    for host in hosts4[:1]:  # a session has one Framed-IP-Address
        replies.append(ReplyAttribute("Framed-IP-Address", ":=", str(host.network_address)))
    for host6 in hosts6[:1]:
        replies.append(ReplyAttribute("Framed-IPv6-Address", ":=", str(host6.network_address)))
    for subnet in networks:
        if is_host(subnet):
            continue
        if subnet.version == 4:
            replies.append(ReplyAttribute("Framed-Route", "+=", f"{subnet} {next_hop} 1"))
        else:
            replies.append(ReplyAttribute("Framed-IPv6-Route", "+=", f"{subnet} :: 1"))
    return replies


# -- router-facing export ---------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def routeros_script(list_name: str, entries: Iterable[tuple[str, int]]) -> str:
    """A RouterOS script that makes the router's address list exactly this list.

    It removes only the entries Backhaul wrote (their comment says so), then adds the
    current ones, so running it twice changes nothing and hand-made entries survive.
    """
    name = _quote(list_name)
    rows = sorted(entries, key=lambda e: (":" in e[0], e[0]))
    lines = [f"# Backhaul address list {list_name}: {len(rows)} entries"]
    for section in ("/ip firewall address-list", "/ipv6 firewall address-list"):
        lines.append(
            f':foreach i in=[{section} find where list={name} and comment~"^backhaul:"] '
            f"do={{{section} remove $i}}"
        )
    for address, account_id in rows:
        section = "/ipv6 firewall address-list" if ":" in address else "/ip firewall address-list"
        lines.append(
            f'{section} add list={name} address={address} comment="backhaul:account={account_id}"'
        )
    return "\n".join(lines) + "\n"
