"""The /triggers API: shipped triggers, validation when configured, and edits."""

import pytest

pytestmark = pytest.mark.integration

GOOD = {
    "name": "Welcome",
    "event_type": "AccountCreated",
    "subject_template": "Welcome, {{ account.name }}",
    "body_template": "Hello {{ contact.name }}, your status is {{ event.status.name }}.",
    "category": "onboarding",
    "audience": "all_contacts",
}


async def test_fresh_install_ships_the_default_triggers(service):
    _, client = service
    triggers = (await client.get("/triggers")).json()
    assert [(t["name"], t["event_type"], t["audience"]) for t in triggers] == [
        ("Account disconnected", "AccountDisconnected", "primary_contact"),
        ("Final invoice issued", "InvoiceIssued", "primary_contact"),
        ("Account on vacation", "AccountStatusChanged", "primary_contact"),
        ("Account delinquent", "AccountStatusChanged", "primary_contact"),
        ("Scheduled event failed", "ScheduledEventFailed", "staff"),
    ]
    assert all(t["shipped"] and t["enabled"] for t in triggers)
    assert triggers[1]["conditions"] == {"final": True}
    only = (await client.get("/triggers", params={"event_type": "InvoiceIssued"})).json()
    assert [t["name"] for t in only] == ["Final invoice issued"]


async def test_create_edit_disable_and_delete_a_trigger(service):
    _, client = service
    created = await client.post("/triggers", json=GOOD)
    assert created.status_code == 201, created.text
    trigger = created.json()
    assert created.headers["Location"] == f"/triggers/{trigger['id']}"
    assert trigger["id"] > 5  # after the shipped ones, on PostgreSQL's sequence too
    assert trigger["shipped"] is False

    patched = await client.patch(
        f"/triggers/{trigger['id']}", json={"enabled": False, "category": None}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is False
    assert patched.json()["category"] is None
    assert patched.json()["subject_template"] == GOOD["subject_template"]

    bad_edit = await client.patch(
        f"/triggers/{trigger['id']}", json={"subject_template": "{{ account.balance }}"}
    )
    assert bad_edit.status_code == 422
    assert "account.balance" in bad_edit.json()["message"]
    still = (await client.get(f"/triggers/{trigger['id']}")).json()
    assert still["subject_template"] == GOOD["subject_template"]

    assert (await client.delete(f"/triggers/{trigger['id']}")).status_code == 204
    assert (await client.get(f"/triggers/{trigger['id']}")).status_code == 404
    assert (await client.delete(f"/triggers/{trigger['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"event_type": "AccountExploded"}, "unknown event type 'AccountExploded'"),
        ({"event_type": "DisconnectAccount"}, "unknown event type 'DisconnectAccount'"),
        ({"subject_template": "{% if %}"}, "subject_template does not compile"),
        ({"body_template": "{{ balance }}"}, "unknown variable 'balance'"),
        ({"body_template": "{{ event.invoice_id }}"}, "unknown variable 'event.invoice_id'"),
        ({"conditions": {"colour": "red"}}, "unknown field 'colour'"),
        ({"audience": "staff", "address": "noc at isp"}, "address 'noc at isp' is invalid"),
        ({"address": "noc@isp.example"}, "address is only for the staff audience"),
    ],
)
async def test_bad_triggers_are_refused_naming_the_problem(service, change, named):
    _, client = service
    response = await client.post("/triggers", json={**GOOD, **change})
    assert response.status_code == 422, response.text
    assert named in response.json()["message"]
    assert len((await client.get("/triggers")).json()) == 5


async def test_bad_bodies_and_duplicates(service):
    _, client = service
    assert (
        await client.post("/triggers", json={**GOOD, "audience": "everyone"})
    ).status_code == 422
    assert (await client.post("/triggers", json={**GOOD, "colour": "red"})).status_code == 422
    assert (await client.post("/triggers", json=GOOD)).status_code == 201
    again = await client.post("/triggers", json=GOOD)
    assert again.status_code == 409
    assert "Welcome" in again.json()["message"]
    assert (await client.get("/triggers/999")).status_code == 404
    assert (await client.patch("/triggers/999", json={"enabled": False})).status_code == 404
    assert (await client.get("/emails/not-a-uuid")).status_code == 422
    assert (await client.get("/accounts/5/emails", params={"state": "lost"})).status_code == 422
    assert (await client.get("/accounts/5/contacts")).status_code == 404


async def test_preview_renders_a_sample_and_says_whether_it_matches(service):
    _, client = service
    sample = {
        "account_id": 7,
        "previous_status": {"id": 2, "name": "Active", "activates_account": True},
        "status": {"id": 9, "name": "Vacation", "activates_account": True},
        "changed_by": "scheduler",
        "changed_at": "2026-11-22T09:00:00Z",
    }
    response = await client.post(
        "/triggers/3/preview", json={"event": sample, "account_name": "Acme", "contact_name": "Ada"}
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["matches"] is True
    assert preview["subject"] == "Your account Acme is in vacation mode"
    assert preview["body"].startswith("Hello Ada,")
    other = {**sample, "status": {"id": 3, "name": "Inactive", "activates_account": False}}
    assert (await client.post("/triggers/3/preview", json={"event": other})).json()[
        "matches"
    ] is False

    broken = await client.post("/triggers/3/preview", json={"event": {"account_id": 7}})
    assert broken.status_code == 422
    assert "not a valid AccountStatusChanged" in broken.json()["message"]
    assert "previous_status" in broken.json()["message"]
    assert (await client.post("/triggers/999/preview", json={"event": {}})).status_code == 404
    assert (await client.get("/accounts/7/emails")).json() == []  # nothing was queued
