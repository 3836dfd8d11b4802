"""Scheduled events against a real database (SQLite and PostgreSQL) and a real Kafka broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backhaul_contracts.common import ServiceKind, StatusRef
from backhaul_contracts.events.outcomes import CommandFailed, CommandSucceeded, FailureCode
from backhaul_contracts.topics import (
    ACCOUNTS_COMMANDS,
    ACCOUNTS_EVENTS,
    BILLING_COMMANDS,
    BILLING_EVENTS,
    SCHEDULER_EVENTS,
)
from backhaul_kit.testing import bearer, eventually, read_events

pytestmark = pytest.mark.integration

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
SEASONAL = StatusRef(id=7, name="Seasonal", activates_account=False)


# Far enough ahead that a loaded CI machine still accepts it as future: the
# request can take over a second to reach the service after the time is taken.
FIRES_SOON = 5.0


def soon(seconds: float = FIRES_SOON) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def known_account(client, others, account_id: int) -> None:
    """Publish AccountCreated and wait until the scheduler's replica has it."""
    await others.account_created(account_id)

    async def listed():
        response = await client.get(f"/scheduled-events?account_id={account_id}")
        assert response.status_code == 200
        probe = await client.post(
            "/scheduled-events",
            json={"account_id": account_id, "action": "disconnect", "run_at": "2000-01-01T00:00Z"},
        )
        # Past time, but the account is known: the time is what gets refused.
        assert probe.status_code == 422, probe.text

    await eventually(listed, timeout=60)


async def schedule(client, **body):
    response = await client.post("/scheduled-events", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_status_change_fires_on_time_and_completes_with_the_owners_result(
    service, others, catalogue, kafka_bootstrap, settings
):
    _runtime, client = service
    await known_account(client, others, 101)
    await catalogue.status(SEASONAL)

    created = await schedule(
        client,
        account_id=101,
        action="change_status",
        run_at=soon(),
        parameters={"status_id": 7, "reason": "seasonal"},
        note="customer asked",
    )
    assert created["state"] == "pending"
    assert created["warnings"] == []
    assert created["created_by"] == "staff@isp"
    assert created["run_at"].endswith("Z") or created["run_at"].endswith("+00:00")

    commands = await read_events(
        kafka_bootstrap, settings.topic(ACCOUNTS_COMMANDS), count=1, timeout=60
    )
    command = commands[0]
    assert command.event_type == "ChangeAccountStatus"
    assert command.subject == "101"
    assert command.payload["status_id"] == 7
    assert command.payload["reason"] == "seasonal"

    fired = (await client.get(f"/scheduled-events/{created['id']}")).json()
    assert fired["state"] == "dispatched"
    assert fired["command_event_id"] == str(command.event_id)
    lag = datetime.fromisoformat(fired["dispatched_at"]) - datetime.fromisoformat(fired["run_at"])
    # The timer wakes every 50 ms here; the bound leaves room for a loaded shared machine.
    assert timedelta(0) <= lag < timedelta(seconds=2)

    await others.publish(
        CommandSucceeded(
            account_id=101, command_type="ChangeAccountStatus", result={"status_id": 7}
        ),
        101,
        topic=ACCOUNTS_EVENTS,
        causation_id=command.event_id,
    )

    async def completed():
        body = (await client.get(f"/scheduled-events/{created['id']}")).json()
        assert body["state"] == "completed", body
        return body

    done = await eventually(completed, timeout=60)
    assert done["outcome"] == {"status_id": 7}
    assert done["failure_reason"] is None

    published = await read_events(
        kafka_bootstrap, settings.topic(SCHEDULER_EVENTS), count=2, timeout=60
    )
    assert [e.event_type for e in published] == ["ScheduledEventCreated", "ScheduledEventCompleted"]
    assert published[1].payload["result"] == {"status_id": 7}


async def test_a_refused_add_service_fails_with_the_owners_reason(
    service, others, catalogue, kafka_bootstrap, settings
):
    _, client = service
    await known_account(client, others, 102)
    await catalogue.service(11, ServiceKind.DATA)
    created = await schedule(
        client,
        account_id=102,
        action="add_service",
        run_at=soon(),
        parameters={"service_id": 11, "quantity": 2, "price_override": "19.99"},
    )
    assert created["parameters"] == {"service_id": 11, "quantity": 2, "price_override": "19.99"}

    command = (
        await read_events(kafka_bootstrap, settings.topic(BILLING_COMMANDS), count=1, timeout=60)
    )[0]
    assert command.event_type == "AddAccountService"
    assert command.payload["quantity"] == 2
    assert command.payload["price_override"] == "19.99"
    reason = "account 102 already has data service 10; remove it first"
    await others.publish(
        CommandFailed(
            account_id=102,
            command_type="AddAccountService",
            reason=reason,
            code=FailureCode.CONFLICT,
        ),
        102,
        topic=BILLING_EVENTS,
        causation_id=command.event_id,
    )

    async def failed():
        body = (await client.get(f"/scheduled-events/{created['id']}")).json()
        assert body["state"] == "failed", body
        return body

    body = await eventually(failed, timeout=60)
    assert body["failure_reason"] == reason
    assert body["failure_code"] == "conflict"
    published = await read_events(
        kafka_bootstrap, settings.topic(SCHEDULER_EVENTS), count=2, timeout=60
    )
    assert published[-1].event_type == "ScheduledEventFailed"
    assert published[-1].payload["reason"] == reason


async def test_bad_input_is_refused_naming_the_problem_and_creates_nothing(
    service, others, catalogue
):
    _, client = service
    await known_account(client, others, 103)
    await catalogue.status(ACTIVE)
    await others.account_created(104)
    await others.account_disconnected(104)

    async def refused(body, status, words):
        response = await client.post("/scheduled-events", json=body)
        assert response.status_code == status, response.text
        message = response.json()["message"]
        for word in words:
            assert word in message, message

    base = {"account_id": 103, "action": "change_status", "run_at": soon(60)}
    await refused({**base, "account_id": 999}, 404, ["account 999"])
    await refused(
        {**base, "parameters": {"status_id": 2}, "run_at": "2001-01-01T00:00:00Z"}, 422, ["past"]
    )
    await refused(
        {
            **base,
            "parameters": {"status_id": 2},
            "run_at": "2099-01-01T09:00:00",
            "time_zone": "Mars/Olympus",
        },
        422,
        ["Mars/Olympus"],
    )
    await refused({**base, "parameters": {}}, 422, ["status_id"])
    await refused({**base, "parameters": {"status_id": 2, "colour": "red"}}, 422, ["colour"])
    await refused({**base, "action": "reboot", "parameters": {}}, 422, ["action"])
    await refused(
        {**base, "action": "add_service", "parameters": {"service_id": 1, "price_override": "-5"}},
        422,
        ["price_override"],
    )

    async def disconnected():
        # A past run_at: refused either way (422 until the replica hears of the disconnect,
        # 409 after), so waiting for the replica creates nothing.
        await refused(
            {
                **base,
                "account_id": 104,
                "parameters": {"status_id": 2},
                "run_at": "2001-01-01T00:00:00Z",
            },
            409,
            ["disconnected"],
        )

    await eventually(disconnected, timeout=60)
    listed = (await client.get("/scheduled-events")).json()
    assert listed["total"] == 0


async def test_local_times_are_stored_in_utc(service, others):
    _, client = service
    await known_account(client, others, 105)
    created = await schedule(
        client,
        account_id=105,
        action="disconnect",
        run_at="2099-07-01T09:00:00",
        time_zone="America/Chicago",
        parameters={"proration": "credit_unused"},
    )
    assert datetime.fromisoformat(created["run_at"]) == datetime(2099, 7, 1, 14, 0, tzinfo=UTC)
    assert created["time_zone"] == "America/Chicago"
    # A daylight-saving gap: 02:30 does not exist in Chicago that night.
    response = await client.post(
        "/scheduled-events",
        json={
            "account_id": 105,
            "action": "disconnect",
            "run_at": "2099-03-08T02:30:00",
            "time_zone": "America/Chicago",
        },
    )
    assert response.status_code == 422, response.text
    assert "daylight" in response.json()["message"]


async def test_only_pending_events_can_be_edited_or_cancelled(service, others, owners):
    runtime, client = service
    await known_account(client, others, 106)
    later = await schedule(
        client,
        account_id=106,
        action="remove_service",
        run_at=soon(3600),
        parameters={"service_id": 5},
    )
    edited = await client.patch(
        f"/scheduled-events/{later['id']}",
        json={
            "run_at": "2099-01-02T08:00:00",
            "time_zone": "Europe/Paris",
            "parameters": {"service_id": 6},
            "note": "moved",
        },
    )
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert datetime.fromisoformat(body["run_at"]) == datetime(2099, 1, 2, 7, 0, tzinfo=UTC)
    assert body["parameters"] == {"service_id": 6}
    assert body["note"] == "moved"

    bad = await client.patch(f"/scheduled-events/{later['id']}", json={"parameters": {}})
    assert bad.status_code == 422
    assert (await client.get(f"/scheduled-events/{later['id']}")).json()["parameters"] == {
        "service_id": 6
    }

    cancelled = await client.post(
        f"/scheduled-events/{later['id']}/cancel", headers=bearer(runtime, "boss")
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["cancelled_by"] == "boss"
    again = await client.delete(f"/scheduled-events/{later['id']}")
    assert again.status_code == 409
    assert "cancelled" in again.json()["message"]

    fired = await schedule(client, account_id=106, action="disconnect", run_at=soon())

    async def completed():
        body = (await client.get(f"/scheduled-events/{fired['id']}")).json()
        assert body["state"] == "completed", body

    await eventually(completed, timeout=60)
    for response in (
        await client.patch(f"/scheduled-events/{fired['id']}", json={"note": "too late"}),
        await client.post(f"/scheduled-events/{fired['id']}/cancel"),
    ):
        assert response.status_code == 409
        assert "only pending" in response.json()["message"]

    unknown = await client.get("/scheduled-events/00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404


async def test_adding_a_second_data_service_warns_unless_a_removal_comes_first(service, others):
    _, client = service
    await known_account(client, others, 107)
    await others.service_added(107, account_service_id=900, service_id=10, kind=ServiceKind.DATA)
    await others.service_added(108, account_service_id=901, service_id=12, kind=ServiceKind.DATA)

    async def warned():
        created = await schedule(
            client,
            account_id=107,
            action="add_service",
            run_at=soon(3600),
            parameters={"service_id": 12},
        )
        assert created["warnings"], created
        return created

    first = await eventually(warned, timeout=60)
    assert "data service 'Service 10' (10)" in first["warnings"][0]
    await client.post(f"/scheduled-events/{first['id']}/cancel")

    await schedule(
        client,
        account_id=107,
        action="remove_service",
        run_at=soon(1800),
        parameters={"service_id": 10},
    )
    clean = await schedule(
        client,
        account_id=107,
        action="add_service",
        run_at=soon(3600),
        parameters={"service_id": 12},
    )
    assert clean["warnings"] == []
    missing = await schedule(
        client,
        account_id=107,
        action="remove_service",
        run_at=soon(7200),
        parameters={"service_id": 44},
    )
    assert "will not be on account 107" in missing["warnings"][0]

    await schedule(client, account_id=107, action="disconnect", run_at=soon(9000))
    twice = await schedule(client, account_id=107, action="disconnect", run_at=soon(9999))
    assert "a second disconnect will fail" in twice["warnings"][0]
    before = await schedule(client, account_id=107, action="disconnect", run_at=soon(8000))
    assert before["warnings"] == []  # it runs first; the later ones were warned


async def test_listing_filters_by_account_state_and_window(service, others):
    _, client = service
    await known_account(client, others, 109)
    await known_account(client, others, 110)
    a = await schedule(client, account_id=109, action="disconnect", run_at="2099-01-01T00:00Z")
    b = await schedule(client, account_id=109, action="disconnect", run_at="2099-02-01T00:00Z")
    await schedule(client, account_id=110, action="disconnect", run_at="2099-01-15T00:00Z")
    await client.post(f"/scheduled-events/{b['id']}/cancel")

    async def ids(query):
        body = (await client.get(f"/scheduled-events?{query}")).json()
        return [e["id"] for e in body["items"]]

    assert await ids("account_id=109") == [a["id"], b["id"]]
    assert await ids("account_id=109&state=pending") == [a["id"]]
    assert await ids("account_id=109&state=cancelled") == [b["id"]]
    assert len(await ids("from=2099-01-01T00:00:00Z&to=2099-01-31T00:00:00Z")) == 2
    assert await ids("account_id=109&from=2099-01-02T00:00:00Z") == [b["id"]]
    bad = await client.get("/scheduled-events?state=exploded")
    assert bad.status_code == 422


async def test_a_parents_disconnect_warns_of_children_left_connected(service, others):
    _, client = service
    await known_account(client, others, 120)
    await others.account_created(121, parent_account_id=120)
    await others.account_created(122, parent_account_id=120)

    async def warned():
        created = await schedule(client, account_id=120, action="disconnect", run_at=soon(3600))
        await client.post(f"/scheduled-events/{created['id']}/cancel")
        assert created["warnings"] and "121, 122" in created["warnings"][0], created
        return created

    first = await eventually(warned, timeout=60)
    assert "will not disconnect child account(s)" in first["warnings"][0]

    await schedule(client, account_id=121, action="disconnect", run_at=soon(3000))
    second = await schedule(client, account_id=120, action="disconnect", run_at=soon(3600))
    assert "child account(s) 122;" in second["warnings"][0]


async def test_the_api_describes_itself_and_reports_ready(service):
    _, client = service
    spec = (await client.get("/openapi.json")).json()
    assert {"/scheduled-events", "/scheduled-events/{event_id}", "/vacations"} <= set(spec["paths"])
    assert (await client.get("/readyz")).status_code == 200
