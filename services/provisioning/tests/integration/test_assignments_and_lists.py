"""IPAM, assignments and address lists against a real database (events handed to the
consumer directly); the walking skeleton also over a real Kafka broker."""

import asyncio
from uuid import uuid4

import pytest
from sqlalchemy import func, select

from backhaul_contracts.topics import ACCOUNTS_EVENTS, PROVISIONING_EVENTS
from backhaul_kit.messaging.consumer import Outcome
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.testing import eventually, read_events
from provisioning.adapters.tables import RadReply

pytestmark = pytest.mark.integration


async def _pool(client, name="customers", cidr="10.20.0.0/24", **extra):
    response = await client.post("/ip-pools", json={"name": name, "cidr": cidr, **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def _list(client, name, rule):
    response = await client.post("/address-lists", json={"name": name, "rule": rule})
    assert response.status_code == 201, response.text
    return response.json()


async def _assign(client, account_id, pool_id, address=None, **extra):
    response = await client.post(
        f"/accounts/{account_id}/ip-assignments",
        json={"pool_id": pool_id, "address": address, **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _entries(client, list_id):
    return sorted(
        e["address"] for e in (await client.get(f"/address-lists/{list_id}/entries")).json()
    )


async def _outbox_count(runtime):
    async with runtime.db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(outbox_messages))


async def test_walking_skeleton_over_kafka(service, settings, kafka_bootstrap, ev):
    _runtime, client = service
    pool = await _pool(client)
    assert (pool["size"], pool["used"]) == (254, 0)
    active = await _list(client, "active", {"activating": True})
    suspended = await _list(client, "suspended", {"status_ids": [ev.SUSPENDED.id]})

    early = await client.post("/accounts/41/ip-assignments", json={"pool_id": pool["id"]})
    assert early.status_code == 404
    assert "account 41 is not known to provisioning" in early.json()["message"]

    topic = settings.topic(ACCOUNTS_EVENTS)
    await ev.publish(kafka_bootstrap, topic, ev.created(41))

    async def known():
        response = await client.post(
            "/accounts/41/ip-assignments", json={"pool_id": pool["id"], "address": None}
        )
        assert response.status_code == 201, response.text
        return response.json()

    assignment = await eventually(known)
    assert assignment["address"] == "10.20.0.1"
    assert assignment["removed_at"] is None
    assert await _entries(client, active["id"]) == ["10.20.0.1"]
    assert await _entries(client, suspended["id"]) == []
    assert (await client.get(f"/ip-pools/{pool['id']}")).json()["used"] == 1

    await ev.publish(kafka_bootstrap, topic, ev.status_changed(41, ev.ACTIVE, ev.SUSPENDED))

    async def moved_to_suspended():
        assert await _entries(client, suspended["id"]) == ["10.20.0.1"]
        assert await _entries(client, active["id"]) == []

    await eventually(moved_to_suspended)

    disconnect = ev.disconnected(41, previous=ev.SUSPENDED)
    await ev.publish(kafka_bootstrap, topic, disconnect, disconnect)

    async def released():
        assert (await client.get("/accounts/41/ip-assignments")).json() == []

    await eventually(released)
    history = (await client.get("/accounts/41/ip-assignments?include_history=true")).json()
    assert [(a["address"], a["removed_reason"]) for a in history] == [("10.20.0.1", "disconnected")]
    assert history[0]["removed_at"] is not None
    assert await _entries(client, suspended["id"]) == []

    events = await read_events(kafka_bootstrap, settings.topic(PROVISIONING_EVENTS), count=7)
    kinds = [e.event_type for e in events]
    assert kinds.count("AccountNetworkReleased") == 1
    assert kinds.count("IpAssigned") == 1 and kinds.count("IpReleased") == 1
    assert kinds.count("AddressListEntryAdded") == 2
    assert kinds.count("AddressListEntryRemoved") == 2
    release = next(e for e in events if e.event_type == "AccountNetworkReleased")
    assert release.payload["disconnection_id"] == str(disconnect.payload["disconnection_id"])
    assert [ip["address"] for ip in release.payload["released_ips"]] == ["10.20.0.1"]
    assert release.payload["removed_list_entries"] == 1


async def test_disconnect_is_released_once_even_if_republished(local_service, ev):
    runtime, _client = local_service
    await ev.deliver(runtime, ev.created(7))
    disconnection_id = uuid4()
    assert await ev.deliver(runtime, ev.disconnected(7, disconnection_id)) is Outcome.HANDLED
    before = await _outbox_count(runtime)
    # The same disconnection under a new event id (a producer resend) changes nothing.
    assert await ev.deliver(runtime, ev.disconnected(7, disconnection_id)) is Outcome.HANDLED
    assert await _outbox_count(runtime) == before
    async with runtime.db.transaction() as session:
        rows = (await session.execute(select(outbox_messages.c.event_type))).scalars().all()
    # Nothing was assigned, yet the release is announced so the disconnect completes.
    assert list(rows) == ["AccountNetworkReleased"]


async def test_ipam_bad_input_is_refused_and_nothing_half_applied(local_service, ev):
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(1))
    pool = await _pool(client)

    malformed = await client.post("/ip-pools", json={"name": "bad", "cidr": "10.0.0.300/24"})
    assert malformed.status_code == 422 and "malformed CIDR" in malformed.json()["message"]
    host_bits = await client.post("/ip-pools", json={"name": "bad", "cidr": "10.1.0.1/24"})
    assert host_bits.status_code == 422
    overlap = await client.post("/ip-pools", json={"name": "inner", "cidr": "10.20.0.128/25"})
    assert overlap.status_code == 409 and "'customers'" in overlap.json()["message"]

    outside = await client.post(
        "/accounts/1/ip-assignments", json={"pool_id": pool["id"], "address": "10.99.0.1"}
    )
    assert outside.status_code == 422 and "outside the pool" in outside.json()["message"]
    broadcast = await client.post(
        "/accounts/1/ip-assignments", json={"pool_id": pool["id"], "address": "10.20.0.255"}
    )
    assert broadcast.status_code == 422 and "broadcast" in broadcast.json()["message"]

    await _assign(client, 1, pool["id"], "10.20.0.9")
    before = await _outbox_count(runtime)
    twice = await client.post(
        "/accounts/1/ip-assignments", json={"pool_id": pool["id"], "address": "10.20.0.9"}
    )
    assert twice.status_code == 409 and "10.20.0.9" in twice.json()["message"]
    bad_mac = await client.post(
        "/accounts/1/ip-assignments",
        json={"pool_id": pool["id"], "assignee": {"kind": "uninventoried_mac", "mac": "zz:00"}},
    )
    assert bad_mac.status_code == 422 and "MAC" in bad_mac.json()["message"]
    assert await _outbox_count(runtime) == before
    assert (await client.get("/accounts/1/uninventoried-macs")).json() == []
    unknown_pool = await client.post("/accounts/1/ip-assignments", json={"pool_id": 999})
    assert unknown_pool.status_code == 404
    bad_rule = await client.post("/address-lists", json={"name": "x", "rule": {"colour": "red"}})
    assert bad_rule.status_code == 422 and "colour" in bad_rule.json()["message"]


async def test_ipv6_pools_subnets_and_next_free(local_service, ev):
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(2))
    v6 = await _pool(client, "v6", "2001:db8:0:1::/64")
    assert v6["version"] == 6
    first = await _assign(client, 2, v6["id"])
    assert first["address"] == "2001:db8:0:1::"
    pool = await _pool(client, "routed", "10.30.0.0/24")
    await _assign(client, 2, pool["id"], "10.30.0.1")
    subnet = await _assign(client, 2, pool["id"], prefix_length=29)
    assert subnet["address"] == "10.30.0.8/29"
    clash = await client.post(
        "/accounts/2/ip-assignments", json={"pool_id": pool["id"], "address": "10.30.0.12"}
    )
    assert clash.status_code == 409 and "10.30.0.8/29" in clash.json()["message"]
    assert (await client.get(f"/ip-pools/{pool['id']}/next-free")).json()["address"] == "10.30.0.2"
    detail = (await client.get(f"/ip-pools/{pool['id']}")).json()
    assert (detail["used"], detail["free"]) == (9, 245)


async def test_each_assignee_kind_provisions_what_seed_003_says(local_service, ev):
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(3))
    server_a = (await client.post("/dhcp-servers", json={"name": "dhcp-a"})).json()
    server_b = (await client.post("/dhcp-servers", json={"name": "dhcp-b"})).json()
    pool = await _pool(client, dhcp_server_ids=[server_a["id"], server_b["id"]])
    everyone = await _list(client, "everyone", {})

    await _assign(client, 3, pool["id"], "10.20.0.10")
    item = await _assign(
        client,
        3,
        pool["id"],
        "10.20.0.11",
        assignee={"kind": "inventory_item", "inventory_item_id": 5, "mac": "aa-bb-cc-00-11-22"},
    )
    assert item["mac"] == "AA:BB:CC:00:11:22"
    loose = await _assign(
        client,
        3,
        pool["id"],
        "10.20.0.12",
        assignee={"kind": "uninventoried_mac", "mac": "aabb.cc00.3344"},
    )
    radius = (
        await client.post(
            "/accounts/3/radius-accounts", json={"username": "ada", "password": "s3cret"}
        )
    ).json()
    await _assign(
        client,
        3,
        pool["id"],
        "10.20.0.13",
        assignee={"kind": "radius_account", "radius_account_id": radius["id"]},
    )

    # Account, inventory MAC and uninventoried MAC: list entries; RADIUS: replies only.
    assert await _entries(client, everyone["id"]) == ["10.20.0.10", "10.20.0.11", "10.20.0.12"]
    for server in (server_a, server_b):
        reservations = (await client.get(f"/dhcp-servers/{server['id']}/reservations")).json()
        assert sorted((r["mac"], r["address"]) for r in reservations) == [
            ("AA:BB:CC:00:11:22", "10.20.0.11"),
            ("AA:BB:CC:00:33:44", "10.20.0.12"),
        ]
    async with runtime.db.transaction() as session:
        replies = (
            await session.execute(
                select(RadReply.attribute, RadReply.value).where(RadReply.username == "ada")
            )
        ).all()
    assert [tuple(r) for r in replies] == [("Framed-IP-Address", "10.20.0.13")]
    macs = (await client.get("/accounts/3/uninventoried-macs")).json()
    assert [m["mac"] for m in macs] == ["AA:BB:CC:00:33:44"]

    # Removing the uninventoried MAC's IP removes the MAC and its reservations.
    removed = await client.delete(f"/ip-assignments/{loose['id']}")
    assert removed.status_code == 200 and removed.json()["removed_reason"] == "removed"
    assert (await client.get("/accounts/3/uninventoried-macs")).json() == []
    reservations = (await client.get(f"/dhcp-servers/{server_a['id']}/reservations")).json()
    assert [r["address"] for r in reservations] == ["10.20.0.11"]
    assert await _entries(client, everyone["id"]) == ["10.20.0.10", "10.20.0.11"]


async def test_soft_assignment_yields_and_moves_keep_history(local_service, ev):
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(4))
    await ev.deliver(runtime, ev.created(5))
    pool = await _pool(client)
    lst = await _list(client, "active", {"activating": True})
    soft = await _assign(client, 4, pool["id"], "10.20.0.50", soft=True)
    assert soft["soft"] is True
    hard = await _assign(client, 5, pool["id"], "10.20.0.50")
    assert hard["soft"] is False
    old = (await client.get(f"/ip-assignments/{soft['id']}")).json()
    assert old["removed_reason"] == "replaced"

    moved = await client.post(f"/ip-assignments/{hard['id']}/move", json={"account_id": 4})
    assert moved.status_code == 201, moved.text
    assert moved.json()["account_id"] == 4 and moved.json()["address"] == "10.20.0.50"
    history5 = (await client.get("/accounts/5/ip-assignments?include_history=true")).json()
    assert [(a["removed_reason"], a["moved_to"]) for a in history5] == [
        ("moved", moved.json()["id"])
    ]
    entries = (await client.get(f"/address-lists/{lst['id']}/entries")).json()
    assert [(e["address"], e["account_id"]) for e in entries] == [("10.20.0.50", 4)]


async def test_lists_follow_data_service_and_delinquency(local_service, ev):
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(6))
    pool = await _pool(client)
    vacation_speed = ev.data_service(30, 1000, 1000)
    vacation = await _list(client, "vacation-1M", {"service_ids": [30]})
    no_data = await _list(client, "no-data", {"data_service": False, "activating": True})
    delinquent = await _list(client, "delinquent", {"delinquent": True})
    await _assign(client, 6, pool["id"], "10.20.0.6")
    assert await _entries(client, no_data["id"]) == ["10.20.0.6"]

    await ev.deliver(runtime, ev.service_added(6, 600, vacation_speed))
    assert await _entries(client, vacation["id"]) == ["10.20.0.6"]
    assert await _entries(client, no_data["id"]) == []
    await ev.deliver(runtime, ev.delinquency(6, True))
    assert await _entries(client, delinquent["id"]) == ["10.20.0.6"]
    on = (await client.get("/accounts/6/address-list-entries")).json()
    assert [(e["address_list"], e["address"]) for e in on] == [
        ("delinquent", "10.20.0.6"),
        ("vacation-1M", "10.20.0.6"),
    ]
    await ev.deliver(runtime, ev.service_removed(6, 600, vacation_speed))
    await ev.deliver(runtime, ev.delinquency(6, False))
    assert await _entries(client, vacation["id"]) == []
    assert await _entries(client, delinquent["id"]) == []
    assert await _entries(client, no_data["id"]) == ["10.20.0.6"]


async def test_router_reads_etag_changes_feed_routeros_and_history(local_service, ev):
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(8))
    pool = await _pool(client)
    lst = await _list(client, "active", {"activating": True})
    first = await client.get(f"/address-lists/{lst['id']}/entries")
    etag = first.headers["ETag"]
    again = await client.get(f"/address-lists/{lst['id']}/entries", headers={"If-None-Match": etag})
    assert again.status_code == 304

    await _assign(client, 8, pool["id"], "10.20.0.8")
    feed = (await client.get(f"/address-lists/{lst['id']}/changes?since=0")).json()
    assert [(c["action"], c["address"]) for c in feed["changes"]] == [("add", "10.20.0.8")]
    cursor = feed["cursor"]
    changed = await client.get(
        f"/address-lists/{lst['id']}/entries", headers={"If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    held_at = (await client.get(f"/address-lists/{lst['id']}/entries")).json()[0]["valid_from"]

    script = (await client.get(f"/address-lists/{lst['id']}/routeros")).text
    assert '/ip firewall address-list add list="active" address=10.20.0.8' in script

    await ev.deliver(runtime, ev.status_changed(8, ev.ACTIVE, ev.SUSPENDED))
    feed = (await client.get(f"/address-lists/changes?since={cursor}")).json()
    assert [(c["action"], c["address_list"]) for c in feed["changes"]] == [("remove", "active")]
    assert (await client.get(f"/address-lists/changes?since={feed['cursor']}")).json()[
        "changes"
    ] == []

    at = await client.get(
        "/address-list-memberships", params={"address": "10.20.0.8", "at": held_at}
    )
    assert at.status_code == 200, at.text
    assert [(m["address_list"], m["valid_to"] is not None) for m in at.json()] == [("active", True)]
    past = await client.get(f"/address-lists/{lst['id']}/entries", params={"at": held_at})
    assert [e["address"] for e in past.json()] == ["10.20.0.8"]
    assert (await client.get(f"/address-lists/{lst['id']}/entries")).json() == []
    naive = await client.get(
        "/address-list-memberships", params={"address": "10.20.0.8", "at": "2026-01-01T00:00:00"}
    )
    assert naive.status_code == 422


async def test_concurrent_next_free_never_hands_out_an_address_twice(local_service, ev):
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(9))
    pool = await _pool(client, "small", "10.40.0.0/29")
    lst = await _list(client, "active", {"activating": True})

    async def grab():
        return await client.post("/accounts/9/ip-assignments", json={"pool_id": pool["id"]})

    answers = await asyncio.gather(*(grab() for _ in range(8)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * 6 + [409] * 2
    addresses = {a.json()["address"] for a in answers if a.status_code == 201}
    assert addresses == {f"10.40.0.{host}" for host in range(1, 7)}
    assert all("no free address" in a.json()["message"] for a in answers if a.status_code == 409)
    feed = (await client.get(f"/address-lists/{lst['id']}/changes")).json()
    assert [c["seq"] for c in feed["changes"]] == list(range(1, 7))


async def test_an_assignment_racing_a_status_change_lands_on_the_new_status_lists(
    local_service, ev
):
    runtime, client = local_service
    pool = await _pool(client)
    active = await _list(client, "active", {"activating": True})
    suspended = await _list(client, "suspended", {"status_ids": [ev.SUSPENDED.id]})
    accounts = list(range(100, 110))
    for account_id in accounts:
        await ev.deliver(runtime, ev.created(account_id))

    async def assign(account_id):
        return await _assign(client, account_id, pool["id"])

    await asyncio.gather(
        *(assign(a) for a in accounts),
        *(ev.deliver(runtime, ev.status_changed(a, ev.ACTIVE, ev.SUSPENDED)) for a in accounts),
    )
    # Whichever committed first, every address ends on the list of the account's last status.
    assert await _entries(client, active["id"]) == []
    assert len(await _entries(client, suspended["id"])) == len(accounts)
