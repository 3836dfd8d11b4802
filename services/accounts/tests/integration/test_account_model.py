"""Issue 3's rules through the API: statuses, groups, contacts, parents, edits, notes, tasks."""

import pytest

from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.testing import read_events

pytestmark = pytest.mark.integration

# A fresh database first publishes the default statuses (Lead, Active, Inactive).
DEFAULT_STATUS_EVENTS = 3


async def _account(client, **body):
    response = await client.post("/accounts", json={"name": "Acme", **body})
    assert response.status_code == 201, response.text
    return response.json()


async def test_default_statuses_can_be_restyled_but_not_deleted(service):
    _, client = service
    renamed = await client.patch("/account-statuses/1", json={"name": "Prospect", "colour": "#abc"})
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["colour"]) == ("Prospect", "#AABBCC")
    refused = await client.delete("/account-statuses/2")
    assert refused.status_code == 409 and "default" in refused.json()["message"]
    flag = await client.patch("/account-statuses/2", json={"activates_account": False})
    assert flag.status_code == 409


async def test_custom_statuses_unique_in_use_and_the_suggested_set(service):
    _, client = service
    installed = (await client.post("/account-statuses/suggested")).json()
    assert {s["name"] for s in installed} == {
        "Pending Install",
        "Collections",
        "Failed Install",
        "Terminated - Win Back",
        "Terminated - No Win Back",
        "Vacation",
    }
    assert (await client.post("/account-statuses/suggested")).json() == []  # idempotent
    vacation = next(s for s in installed if s["name"] == "Vacation")
    assert vacation["activates_account"] is True

    dup = await client.post(
        "/account-statuses", json={"name": "Vacation", "activates_account": True}
    )
    assert dup.status_code == 409

    account = await _account(client, status_id=vacation["id"])
    in_use = await client.delete(f"/account-statuses/{vacation['id']}")
    assert in_use.status_code == 409 and "1 account" in in_use.json()["message"]
    await client.post(f"/accounts/{account['id']}/status", json={"status_id": 2})
    assert (await client.delete(f"/account-statuses/{vacation['id']}")).status_code == 204


async def test_groups_and_the_header_label(service):
    _, client = service
    fibre = (await client.post("/account-groups", json={"name": "Fibre"})).json()
    business = (await client.post("/account-groups", json={"name": "Business"})).json()
    assert (await client.post("/account-groups", json={"name": "Fibre"})).status_code == 409

    loner = await _account(client)
    assert loner["groups_label"] == "[No Groups]"
    member = await _account(client, group_ids=[fibre["id"], business["id"]])
    assert member["groups_label"] == "Business, Fibre"
    assert (
        await client.post("/accounts", json={"name": "x", "group_ids": [999]})
    ).status_code == 404

    page = (await client.get("/accounts", params={"group_id": fibre["id"]})).json()
    assert [a["id"] for a in page["items"]] == [member["id"]]
    regrouped = await client.patch(f"/accounts/{member['id']}", json={"group_ids": []})
    assert regrouped.json()["groups_label"] == "[No Groups]"


async def test_exactly_one_primary_contact(service):
    _, client = service
    account = await _account(client)
    base = f"/accounts/{account['id']}/contacts"
    first = (await client.post(base, json={"name": "A", "email": "a@example.com"})).json()
    assert first["is_primary"] is True  # the first contact is primary
    second = await client.post(base, json={"name": "B", "email": "b@example.com", "primary": True})
    assert second.status_code == 409 and "already has a primary" in second.json()["message"]
    second = (
        await client.post(
            base, json={"name": "B", "email": "b@example.com", "message_categories": ["billing"]}
        )
    ).json()
    assert second["is_primary"] is False

    moved = await client.post(f"{base}/{second['id']}/primary")
    assert moved.json()["is_primary"] is True
    listed = (await client.get(base)).json()
    assert [c["name"] for c in listed if c["is_primary"]] == ["B"]

    assert (await client.delete(f"{base}/{second['id']}")).status_code == 409
    assert (await client.delete(f"{base}/{first['id']}")).status_code == 204
    bad = await client.post(base, json={"name": "C", "email": "not-an-email"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "email"
    assert (await client.post(f"{base}/999/primary")).status_code == 404


async def test_parents_children_and_no_cycles(service):
    _, client = service
    grandparent = await _account(client, name="Holding")
    parent = await _account(client, name="Branch", parent_account_id=grandparent["id"])
    child = await _account(client, name="Shop", parent_account_id=parent["id"])
    assert child["parent_account_id"] == parent["id"]
    assert [c["id"] for c in (await client.get(f"/accounts/{parent['id']}/children")).json()] == [
        child["id"]
    ]

    cycle = await client.patch(
        f"/accounts/{grandparent['id']}", json={"parent_account_id": child["id"]}
    )
    assert cycle.status_code == 409 and "cycle" in cycle.json()["message"]
    itself = await client.patch(f"/accounts/{child['id']}", json={"parent_account_id": child["id"]})
    assert itself.status_code == 409
    unlinked = await client.patch(f"/accounts/{child['id']}", json={"parent_account_id": None})
    assert unlinked.json()["parent_account_id"] is None


async def test_a_parents_disconnect_leaves_its_children_untouched(service):
    _, client = service
    parent = await _account(client, status_id=2)
    kids = [await _account(client, status_id=2, parent_account_id=parent["id"]) for _ in range(2)]
    assert (await client.post(f"/accounts/{parent['id']}/disconnect")).status_code == 201
    for kid in kids:
        after = (await client.get(f"/accounts/{kid['id']}")).json()
        assert after["status"]["name"] == "Active"
        assert after["disconnected_at"] is None


async def test_edits_are_logged_and_published(service, kafka_bootstrap, settings):
    _, client = service
    address = {"line1": "9 Elm", "city": "Shelbyville", "country": "US"}
    account = await _account(client, serviceable_address=address)
    other = await _account(client, name="Neighbour")
    taken = await client.patch(f"/accounts/{other['id']}", json={"serviceable_address": address})
    assert taken.status_code == 409

    edited = await client.patch(
        f"/accounts/{account['id']}",
        json={
            "name": "Acme Ltd",
            "billing_day": 15,
            "serviceable_address": {**address, "line1": "10 Elm"},
        },
    )
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert (body["name"], body["billing_day"]) == ("Acme Ltd", 15)
    assert body["serviceable_address"]["line1"] == "10 Elm"
    # The old address is free again.
    moved_in = await client.patch(f"/accounts/{other['id']}", json={"serviceable_address": address})
    assert moved_in.status_code == 200

    logs = (
        await client.get(f"/accounts/{account['id']}/logs", params={"action": "account_updated"})
    ).json()
    assert len(logs) == 1
    assert logs[0]["changes"]["name"] == {"from": "Acme", "to": "Acme Ltd"}
    assert (
        await client.get(f"/accounts/{account['id']}/logs", params={"actor": "nobody"})
    ).json() == []

    events = await read_events(
        kafka_bootstrap, settings.topic(ACCOUNTS_EVENTS), count=DEFAULT_STATUS_EVENTS + 4
    )
    updated = [
        e for e in events if e.event_type == "AccountUpdated" and e.subject == str(account["id"])
    ]
    assert updated and updated[0].payload["changed_fields"] == [
        "billing_day",
        "name",
        "serviceable_address",
    ]


async def test_notes_and_tasks(service):
    _, client = service
    account = await _account(client)
    base = f"/accounts/{account['id']}"
    note = (await client.post(f"{base}/notes", json={"body": "Prefers email"})).json()
    assert note["author"] == "staff@isp"  # the token's subject
    assert [n["body"] for n in (await client.get(f"{base}/notes")).json()] == ["Prefers email"]

    task = (
        await client.post(f"{base}/tasks", json={"title": "Call back", "assignee": "sam"})
    ).json()
    assert task["completed"] is False
    done = (await client.patch(f"{base}/tasks/{task['id']}", json={"completed": True})).json()
    assert done["completed"] is True and done["completed_at"] is not None
    reassigned = (await client.patch(f"{base}/tasks/{task['id']}", json={"assignee": "kim"})).json()
    assert reassigned["assignee"] == "kim"
    assert (await client.get(f"{base}/tasks", params={"completed": "false"})).json() == []
    assert (await client.patch(f"{base}/tasks/999", json={"completed": True})).status_code == 404
    actions = [e["action"] for e in (await client.get(f"{base}/logs")).json()]
    assert actions[:4] == ["task_assigned", "task_completed", "task_added", "note_added"]
