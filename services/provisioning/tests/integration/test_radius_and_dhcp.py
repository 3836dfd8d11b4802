"""RADIUS rows, DHCP reservations and list rules as they change, on both databases."""

import pytest
from sqlalchemy import select

from provisioning.adapters.tables import RadCheck, RadGroupReply, RadReply, RadUserGroup

pytestmark = pytest.mark.integration


async def _rows(runtime, table, username):
    async with runtime.db.transaction() as session:
        rows = await session.scalars(select(table).where(table.username == username))
        return sorted(
            (r.attribute, r.value) if hasattr(r, "attribute") else (r.groupname, r.priority)
            for r in rows
        )


async def _setup(client, runtime, ev, account_id):
    await ev.deliver(runtime, ev.created(account_id))
    pool = (await client.post("/ip-pools", json={"name": "p", "cidr": "100.64.0.0/24"})).json()
    routed = (await client.post("/ip-pools", json={"name": "r", "cidr": "198.51.100.0/24"})).json()
    radius = await client.post(
        f"/accounts/{account_id}/radius-accounts", json={"username": "bob", "password": "pw"}
    )
    assert radius.status_code == 201, radius.text
    return pool, routed, radius.json()


async def test_radius_replies_follow_assignments_moves_and_deletion(local_service, ev):
    runtime, client = local_service
    pool, routed, radius = await _setup(client, runtime, ev, 20)
    assignee = {"kind": "radius_account", "radius_account_id": radius["id"]}
    subnet = await client.post(
        "/accounts/20/ip-assignments",
        json={"pool_id": routed["id"], "prefix_length": 29, "assignee": assignee},
    )
    assert subnet.status_code == 201, subnet.text
    assert await _rows(runtime, RadReply, "bob") == [("Framed-Route", "198.51.100.0/29 0.0.0.0 1")]

    # An account's own address moves onto the RADIUS account: the route's next hop follows it.
    own = (await client.post("/accounts/20/ip-assignments", json={"pool_id": pool["id"]})).json()
    moved = await client.post(
        f"/ip-assignments/{own['id']}/move", json={"account_id": 20, "assignee": assignee}
    )
    assert moved.status_code == 201, moved.text
    assert await _rows(runtime, RadReply, "bob") == [
        ("Framed-IP-Address", "100.64.0.1"),
        ("Framed-Route", "198.51.100.0/29 100.64.0.1 1"),
    ]
    assert await _rows(runtime, RadCheck, "bob") == [("Cleartext-Password", "pw")]

    other = await client.post(
        "/accounts/20/radius-accounts", json={"username": "bob", "password": "x"}
    )
    assert other.status_code == 409 and "bob" in other.json()["message"]

    assert (await client.delete(f"/radius-accounts/{radius['id']}")).status_code == 204
    assert await _rows(runtime, RadReply, "bob") == []
    assert await _rows(runtime, RadCheck, "bob") == []
    assert (await client.get("/accounts/20/ip-assignments")).json() == []
    # The username is free again.
    again = await client.post(
        "/accounts/20/radius-accounts", json={"username": "bob", "password": "new"}
    )
    assert again.status_code == 201
    assert await _rows(runtime, RadCheck, "bob") == [("Cleartext-Password", "new")]
    longest = "u" * 64
    made = (
        await client.post(
            "/accounts/20/radius-accounts", json={"username": longest, "password": "pw"}
        )
    ).json()
    assert (await client.delete(f"/radius-accounts/{made['id']}")).status_code == 204
    remade = await client.post(
        "/accounts/20/radius-accounts", json={"username": longest, "password": "pw"}
    )
    assert remade.status_code == 201
    listed = (await client.get("/accounts/20/radius-accounts")).json()
    assert sorted(r["username"] for r in listed) == ["bob", longest]


async def test_radius_groups_follow_status_and_data_service(local_service, ev):
    runtime, client = local_service
    await _setup(client, runtime, ev, 21)
    suspended = await client.post(
        "/radius-groups",
        json={
            "name": "suspended",
            "rule": {"status_ids": [ev.SUSPENDED.id]},
            "attributes": [{"attribute": "Mikrotik-Rate-Limit", "value": "64k/64k"}],
        },
    )
    assert suspended.status_code == 201, suspended.text
    await ev.deliver(runtime, ev.service_added(21, 210, ev.data_service(40, 50_000, 10_000)))
    assert await _rows(runtime, RadUserGroup, "bob") == [("service-40", 10)]
    async with runtime.db.transaction() as session:
        replies = (
            await session.scalars(
                select(RadGroupReply.value).where(
                    RadGroupReply.groupname == "service-40",
                    RadGroupReply.attribute == "Mikrotik-Rate-Limit",
                )
            )
        ).all()
    assert list(replies) == ["10000k/50000k"]

    await ev.deliver(runtime, ev.status_changed(21, ev.ACTIVE, ev.SUSPENDED))
    assert await _rows(runtime, RadUserGroup, "bob") == [("service-40", 10), ("suspended", 1)]
    await ev.deliver(runtime, ev.service_removed(21, 210, ev.data_service(40, 50_000, 10_000)))
    await ev.deliver(runtime, ev.status_changed(21, ev.SUSPENDED, ev.ACTIVE))
    assert await _rows(runtime, RadUserGroup, "bob") == []

    await ev.deliver(runtime, ev.status_changed(21, ev.ACTIVE, ev.SUSPENDED))
    changed = await client.put(
        f"/radius-groups/{suspended.json()['id']}",
        json={
            "rule": {"status_ids": [ev.SUSPENDED.id]},
            "attributes": [{"attribute": "Mikrotik-Rate-Limit", "value": "128k/128k"}],
        },
    )
    assert changed.status_code == 200, changed.text
    async with runtime.db.transaction() as session:
        replies = (
            await session.scalars(
                select(RadGroupReply.value).where(RadGroupReply.groupname == "suspended")
            )
        ).all()
    assert list(replies) == ["128k/128k"]
    emptied = await client.put(
        f"/radius-groups/{suspended.json()['id']}",
        json={
            "rule": {"status_ids": [999]},
            "attributes": [{"attribute": "Mikrotik-Rate-Limit", "value": "128k/128k"}],
        },
    )
    assert emptied.status_code == 200
    assert await _rows(runtime, RadUserGroup, "bob") == []
    service_group = next(
        g for g in (await client.get("/radius-groups")).json() if g["kind"] == "data_service"
    )
    refused = await client.put(
        f"/radius-groups/{service_group['id']}",
        json={"rule": {}, "attributes": [{"attribute": "Mikrotik-Rate-Limit", "value": "1k/1k"}]},
    )
    assert refused.status_code == 409 and "data service" in refused.json()["message"]

    groups = (await client.get("/radius-groups")).json()
    assert [(g["name"], g["kind"], g["priority"]) for g in groups] == [
        ("suspended", "status", 1),
        ("service-40", "data_service", 10),
    ]
    bad = await client.post(
        "/radius-groups",
        json={"name": "x", "rule": {}, "attributes": [{"attribute": "A B", "value": "1"}]},
    )
    assert bad.status_code == 422 and "attribute" in bad.json()["message"]


async def test_dhcp_reservations_follow_the_pools_servers(local_service, ev):
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(22))
    first = (await client.post("/dhcp-servers", json={"name": "one"})).json()
    second = (await client.post("/dhcp-servers", json={"name": "two"})).json()
    pool = (
        await client.post(
            "/ip-pools",
            json={"name": "lan", "cidr": "192.0.2.0/24", "dhcp_server_ids": [first["id"]]},
        )
    ).json()
    assigned = await client.post(
        "/accounts/22/ip-assignments",
        json={
            "pool_id": pool["id"],
            "assignee": {
                "kind": "inventory_item",
                "inventory_item_id": 1,
                "mac": "00:11:22:33:44:55",
            },
        },
    )
    assert assigned.status_code == 201

    moved = await client.put(
        f"/ip-pools/{pool['id']}/dhcp-servers", json={"dhcp_server_ids": [second["id"]]}
    )
    assert moved.json()["dhcp_server_ids"] == [second["id"]]
    assert (await client.get(f"/dhcp-servers/{first['id']}/reservations")).json() == []
    reservations = (await client.get(f"/dhcp-servers/{second['id']}/reservations")).json()
    assert [(r["mac"], r["address"]) for r in reservations] == [("00:11:22:33:44:55", "192.0.2.1")]

    same_mac = await client.post(
        "/accounts/22/ip-assignments",
        json={
            "pool_id": pool["id"],
            "assignee": {
                "kind": "inventory_item",
                "inventory_item_id": 1,
                "mac": "00:11:22:33:44:55",
            },
        },
    )
    assert same_mac.status_code == 409 and "already holds" in same_mac.json()["message"]
    subnet = await client.post(
        "/accounts/22/ip-assignments",
        json={
            "pool_id": pool["id"],
            "prefix_length": 30,
            "assignee": {"kind": "uninventoried_mac", "mac": "00:11:22:33:44:66"},
        },
    )
    assert subnet.status_code == 422 and "DHCP reservation" in subnet.json()["message"]
    assert (await client.get("/accounts/22/uninventoried-macs")).json() == []


async def test_uninventoried_macs_and_list_rule_changes(local_service, ev):
    runtime, client = local_service
    await ev.deliver(runtime, ev.created(23))
    pool = (await client.post("/ip-pools", json={"name": "lan", "cidr": "192.0.2.0/24"})).json()
    mac = await client.post("/accounts/23/uninventoried-macs", json={"mac": "0a0b0c0d0e0f"})
    assert mac.status_code == 201 and mac.json()["mac"] == "0A:0B:0C:0D:0E:0F"
    await client.post(
        "/accounts/23/ip-assignments",
        json={
            "pool_id": pool["id"],
            "assignee": {"kind": "uninventoried_mac", "mac": "0a:0b:0c:0d:0e:0f"},
        },
    )
    lst = await client.post("/address-lists", json={"name": "none", "rule": {"activating": False}})
    assert lst.json()["entry_count"] == 0
    changed = await client.put(f"/address-lists/{lst.json()['id']}", json={"rule": {}})
    assert changed.json()["entry_count"] == 1

    assert (await client.delete(f"/uninventoried-macs/{mac.json()['id']}")).status_code == 204
    assert (await client.get("/accounts/23/uninventoried-macs")).json() == []
    assert (await client.get("/accounts/23/ip-assignments")).json() == []
    assert (await client.get(f"/address-lists/{lst.json()['id']}")).json()["entry_count"] == 0
    assert (await client.delete(f"/uninventoried-macs/{mac.json()['id']}")).status_code == 404
    unknown = await client.get("/accounts/999/ip-assignments")
    assert unknown.status_code == 404 and "not known to provisioning" in unknown.json()["message"]
