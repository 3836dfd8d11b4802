"""Vacations (seed 002): one request, the linked events in order on both dates, one cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backhaul_contracts.common import ServiceKind, StatusRef
from backhaul_kit.testing import bearer, eventually

pytestmark = pytest.mark.integration

VACATION_STATUS = 9
ACTIVE_STATUS = 2
FIBER = 10  # the normal data service
VACATION_1M = 11


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def account_on_fiber(client, others, account_id: int) -> None:
    """An account on the normal data service, as the replicas learn it from events."""
    await others.status_defined(StatusRef(id=ACTIVE_STATUS, name="Active", activates_account=True))
    await others.status_defined(
        StatusRef(id=VACATION_STATUS, name="Vacation", activates_account=True)
    )
    await others.account_created(account_id)
    await others.service_added(
        account_id, account_service_id=account_id * 10, service_id=FIBER, kind=ServiceKind.DATA
    )
    # The vacation service is known from another account that already had it.
    await others.service_added(
        999, account_service_id=9990, service_id=VACATION_1M, kind=ServiceKind.DATA
    )

    async def replicated():
        probe = await client.post(
            "/scheduled-events",
            json={
                "account_id": account_id,
                "action": "add_service",
                "run_at": at(3600),
                "parameters": {"service_id": VACATION_1M},
            },
        )
        assert probe.status_code == 201, probe.text
        await client.post(f"/scheduled-events/{probe.json()['id']}/cancel")
        assert "'Service 10' (10)" in " ".join(probe.json()["warnings"]), probe.json()
        for status_id in (ACTIVE_STATUS, VACATION_STATUS):
            # A past time is refused once the status is known; before, the status is.
            known = await client.post(
                "/scheduled-events",
                json={
                    "account_id": account_id,
                    "action": "change_status",
                    "run_at": "2001-01-01T00:00:00Z",
                    "parameters": {"status_id": status_id},
                },
            )
            assert "in the past" in known.json()["message"], known.text

    await eventually(replicated, timeout=60)


async def test_a_vacation_swaps_status_and_data_service_on_leaving_and_back_on_returning(
    service, others, owners
):
    _, client = service
    await account_on_fiber(client, others, 201)

    response = await client.post(
        "/vacations",
        json={
            "account_id": 201,
            # Seconds ahead, so that a loaded machine still takes them as future.
            "leave_at": at(5),
            "return_at": at(7),
            "vacation_status_id": VACATION_STATUS,
            "vacation_service_id": VACATION_1M,
            "note": "two weeks in Lisbon",
        },
    )
    assert response.status_code == 201, response.text
    vacation = response.json()
    assert vacation["state"] == "scheduled"
    # The normal status and service default to the account's current ones.
    assert vacation["normal_status_id"] == ACTIVE_STATUS
    assert vacation["normal_service_id"] == FIBER
    assert vacation["warnings"] == []
    assert [
        (e["action"], e["parameters"].get("service_id") or e["parameters"]["status_id"])
        for e in vacation["events"]
    ] == [
        ("change_status", VACATION_STATUS),
        ("remove_service", FIBER),
        ("add_service", VACATION_1M),
        ("change_status", ACTIVE_STATUS),
        ("remove_service", VACATION_1M),
        ("add_service", FIBER),
    ]
    assert all(e["vacation_id"] == vacation["id"] for e in vacation["events"])

    # A part of the vacation cannot be cancelled on its own.
    part = await client.post(f"/scheduled-events/{vacation['events'][1]['id']}/cancel")
    assert part.status_code == 409
    assert "cancel the vacation" in part.json()["message"]

    async def completed():
        body = (await client.get(f"/vacations/{vacation['id']}")).json()
        assert body["state"] == "completed", [e["state"] for e in body["events"]]
        return body

    done = await eventually(completed, timeout=60)
    assert all(e["outcome"]["command"] for e in done["events"])
    # Each owner gets its commands in order (one topic partition per account); the two
    # owners work independently of each other.
    sent = [
        (c.event_type, c.payload.get("service_id") or c.payload.get("status_id"))
        for c in owners.received
        if c.subject == "201"
    ]
    assert [c for c in sent if c[0] == "ChangeAccountStatus"] == [
        ("ChangeAccountStatus", VACATION_STATUS),
        ("ChangeAccountStatus", ACTIVE_STATUS),
    ]
    assert [c for c in sent if c[0] != "ChangeAccountStatus"] == [
        ("RemoveAccountService", FIBER),
        ("AddAccountService", VACATION_1M),
        ("RemoveAccountService", VACATION_1M),
        ("AddAccountService", FIBER),
    ]
    listed = (await client.get("/vacations?account_id=201")).json()
    assert [v["id"] for v in listed] == [vacation["id"]]

    moved = await client.patch(f"/vacations/{vacation['id']}", json={"return_at": at(3600)})
    assert moved.status_code == 409
    assert "has already run" in moved.json()["message"]

    late = await client.post(f"/vacations/{vacation['id']}/cancel")
    assert late.status_code == 409
    assert "already started" in late.json()["message"]


async def test_a_vacation_is_cancelled_as_one(service, others):
    runtime, client = service
    await account_on_fiber(client, others, 202)
    vacation = (
        await client.post(
            "/vacations",
            json={
                "account_id": 202,
                "leave_at": "2099-08-01",
                "return_at": "2099-08-15T08:00:00",
                "time_zone": "Europe/Lisbon",
                "vacation_status_id": VACATION_STATUS,
                "vacation_service_id": VACATION_1M,
                "normal_status_id": ACTIVE_STATUS,
                "normal_service_id": FIBER,
            },
        )
    ).json()
    assert vacation["leave_at"].startswith("2099-07-31T23:00:00")
    assert vacation["return_at"].startswith("2099-08-15T07:00:00")

    longer = await client.patch(
        f"/vacations/{vacation['id']}", json={"return_at": "2099-08-22T08:00:00"}
    )
    assert longer.status_code == 200, longer.text
    assert longer.json()["return_at"].startswith("2099-08-22T07:00:00")
    assert [e["run_at"][:10] for e in longer.json()["events"]] == ["2099-07-31"] * 3 + [
        "2099-08-22"
    ] * 3
    backwards = await client.patch(
        f"/vacations/{vacation['id']}", json={"return_at": "2099-07-01T00:00:00Z"}
    )
    assert backwards.status_code == 422
    assert "must be after the leave" in backwards.json()["message"]

    cancelled = await client.post(
        f"/vacations/{vacation['id']}/cancel", headers=bearer(runtime, "support@isp")
    )
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["state"] == "cancelled"
    assert {e["state"] for e in body["events"]} == {"cancelled"}
    assert {e["cancelled_by"] for e in body["events"]} == {"support@isp"}
    again = await client.delete(f"/vacations/{vacation['id']}")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["message"]
    edit = await client.patch(f"/vacations/{vacation['id']}", json={"leave_at": at(60)})
    assert edit.status_code == 409


async def test_impossible_vacations_are_refused_and_create_nothing(service, others):
    _, client = service
    await account_on_fiber(client, others, 203)
    base = {
        "account_id": 203,
        "leave_at": at(3600),
        "return_at": at(7200),
        "vacation_status_id": VACATION_STATUS,
        "vacation_service_id": VACATION_1M,
    }
    for body, status, words in [
        ({**base, "return_at": at(60)}, 422, "must be after the leave"),
        ({**base, "leave_at": "2001-01-01T00:00:00Z"}, 422, "in the past"),
        ({**base, "vacation_service_id": FIBER}, 422, "both 10"),
        ({**base, "time_zone": "Nowhere/Land"}, 422, "Nowhere/Land"),
        ({**base, "account_id": 4040}, 404, "account 4040"),
    ]:
        response = await client.post("/vacations", json=body)
        assert response.status_code == status, response.text
        assert words in response.json()["message"]
    assert (await client.get("/vacations?account_id=203")).json() == []
    pending = (await client.get("/scheduled-events?account_id=203&state=pending")).json()
    assert pending["total"] == 0
