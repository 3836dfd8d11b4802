"""The disconnect walking skeleton, end to end, over HTTP only (issue: foundation).

Kafka and the five services run as separate OS processes, each service on its own SQLite
database; this test only talks HTTP to them (and reads the SMTP sink's mailbox and the
OTLP receiver's spans).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from backhaul_devstack.__main__ import development_token
from backhaul_devstack.smtp_sink import read_messages
from backhaul_kit.testing import eventually

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {development_token('e2e@isp')}"}

ADDRESS = {"line1": "42 Fibre Way", "city": "Springfield", "postal_code": "99999", "country": "US"}


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json()


async def _create_account(
    http: httpx.AsyncClient, accounts: str, name: str, email: str, address: dict[str, str]
) -> dict[str, Any]:
    return _ok(
        await http.post(
            f"{accounts}/accounts",
            json={
                "name": name,
                "status_id": 2,
                "serviceable_address": address,
                "primary_contact": {"name": name, "email": email},
            },
        ),
        201,
    )


async def test_disconnect_fans_out_through_every_service(stack, otlp):
    accounts, billing = stack.url("accounts"), stack.url("billing")
    provisioning, notifications = stack.url("provisioning"), stack.url("notifications")
    async with httpx.AsyncClient(timeout=10, headers=AUTH) as http:
        account = await _create_account(
            http, accounts, "Grace Hopper", "grace@example.com", ADDRESS
        )
        account_id = account["id"]

        service = _ok(
            await http.post(
                f"{billing}/services",
                json={
                    "name": f"Fibre 500 {uuid.uuid4().hex[:6]}",
                    "kind": "recurring",
                    "price": "49.99",
                    "currency": "USD",
                },
            ),
            201,
        )

        async def add_service() -> dict[str, Any]:
            return _ok(
                await http.post(
                    f"{billing}/accounts/{account_id}/services",
                    json={"service_id": service["id"], "quantity": 1},
                ),
                201,
            )

        await eventually(add_service)  # billing learns of the account from its event

        pool = _ok(
            await http.post(
                f"{provisioning}/ip-pools", json={"name": "e2e pool", "cidr": "100.64.10.0/24"}
            ),
            201,
        )
        active_list = _ok(
            await http.post(
                f"{provisioning}/address-lists",
                json={"name": "active-e2e", "rule": {"activating": True}},
            ),
            201,
        )

        async def assign_ip() -> dict[str, Any]:
            return _ok(
                await http.post(
                    f"{provisioning}/accounts/{account_id}/ip-assignments",
                    json={"pool_id": pool["id"]},
                ),
                201,
            )

        assignment = await eventually(assign_ip)

        async def listed() -> list[str]:
            entries = _ok(
                await http.get(f"{provisioning}/address-lists/{active_list['id']}/entries")
            )
            # The list holds every activating account's addresses; look at this one's.
            return [e["address"] for e in entries if e["account_id"] == account_id]

        assert await listed() == [assignment["address"]]

        correlation_id = str(uuid.uuid4())
        started = time.monotonic()
        disconnection = _ok(
            await http.post(
                f"{accounts}/accounts/{account_id}/disconnect",
                json={},
                headers={"X-Correlation-ID": correlation_id},
            ),
            201,
        )

        async def fanned_out() -> dict[str, Any]:
            progress = _ok(await http.get(f"{accounts}/accounts/{account_id}/disconnections"))
            assert len(progress) == 1
            assert progress[0]["progress"] == "complete", progress[0]["steps"]
            return progress[0]

        progress = await eventually(fanned_out, timeout=60)
        elapsed = time.monotonic() - started
        print(f"\ndisconnect fully fanned out in {elapsed * 1000:.0f} ms")
        assert progress["id"] == disconnection["id"]

        after = _ok(await http.get(f"{accounts}/accounts/{account_id}"))
        assert after["status"]["name"] == "Inactive"
        assert after["serviceable_address"] is None

        invoices = _ok(await http.get(f"{billing}/accounts/{account_id}/invoices"))
        finals = [i for i in invoices if i["final"]]
        assert len(finals) == 1
        assert finals[0]["disconnection_id"] == disconnection["id"]
        # The service's debit is on the final invoice.
        debits = finals[0]["debits"]
        assert [(d["service_id"], d["invoice_id"]) for d in debits] == [
            (service["id"], finals[0]["id"])
        ]
        steps = {s["step"]: s for s in progress["steps"]}
        assert steps["final_invoice"]["result"]["invoice_id"] == finals[0]["id"]

        history = _ok(
            await http.get(
                f"{provisioning}/accounts/{account_id}/ip-assignments",
                params={"include_history": "true"},
            )
        )
        assert [a["address"] for a in history] == [assignment["address"]]
        assert history[0]["removed_at"] is not None
        assert _ok(await http.get(f"{provisioning}/accounts/{account_id}/ip-assignments")) == []
        assert await listed() == []
        assert steps["network_release"]["result"]["released_ips"] == [assignment["address"]]

        # One email per triggering event and recipient: the disconnect notice (and, from the
        # shipped "final invoice issued" trigger, the final invoice), each sent exactly once.
        async def delivered() -> list[dict[str, Any]]:
            emails = _ok(await http.get(f"{notifications}/accounts/{account_id}/emails"))
            assert emails and all(e["state"] == "sent" for e in emails), emails
            return emails

        emails = await eventually(delivered)
        by_trigger = {e["trigger_event_type"]: e for e in emails}
        assert len(by_trigger) == len(emails)
        notice = by_trigger["AccountDisconnected"]
        assert (notice["recipient"], notice["state"]) == ("grace@example.com", "sent")
        assert notice["disconnection_id"] == disconnection["id"]
        assert steps["email"]["result"]["email_id"] == notice["id"]
        mail = [m for m in read_messages(stack.mail_dir) if "grace@example.com" in m["to"]]
        assert sorted(m["subject"] for m in mail) == sorted(e["subject"] for e in emails)
        assert len([m for m in mail if m["subject"] == notice["subject"]]) == 1
        assert steps["email"]["state"] == "done"

        # Disconnecting again is refused and changes nothing.
        again = await http.post(f"{accounts}/accounts/{account_id}/disconnect", json={})
        assert again.status_code == 409
        await _assert_one_trace(otlp, correlation_id, account_id)


async def _assert_one_trace(otlp, correlation_id: str, account_id: int) -> None:
    """The disconnect is one trace from the HTTP request through every consumer."""

    async def whole_trace() -> set[str]:
        spans = otlp.spans()
        roots = [
            s
            for s in spans
            if s.service == "backhaul-accounts"
            and s.kind == 2  # SERVER
            and "/disconnect" in s.name
            and "201"
            in (
                s.attributes.get("http.response.status_code"),
                s.attributes.get("http.status_code"),
            )
        ]
        assert roots, "no server span for the disconnect request"
        trace_id = roots[0].trace_id
        in_trace = [s for s in spans if s.trace_id == trace_id]
        services = {s.service for s in in_trace}
        assert {
            "backhaul-accounts",
            "backhaul-billing",
            "backhaul-provisioning",
            "backhaul-notifications",
        } <= services, services
        consumers = [s for s in in_trace if s.kind == 5]  # CONSUMER
        assert {s.service for s in consumers} >= {
            "backhaul-billing",
            "backhaul-provisioning",
            "backhaul-notifications",
            "backhaul-accounts",
        }
        assert all(s.attributes.get("backhaul.account_id") == str(account_id) for s in consumers)
        assert all(s.attributes.get("backhaul.event_id") for s in consumers)
        return services

    await eventually(whole_trace, timeout=30)


async def test_scheduled_disconnect_fires_once_and_completes(stack):
    accounts, scheduler = stack.url("accounts"), stack.url("scheduler")
    async with httpx.AsyncClient(timeout=10, headers=AUTH) as http:
        account = await _create_account(
            http,
            accounts,
            "Alan Turing",
            "alan@example.com",
            {**ADDRESS, "line1": "7 Bletchley Rd"},
        )

        async def schedule() -> dict[str, Any]:
            # Taken on each try, so a retry never sends a time already past.
            run_at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
            return _ok(
                await http.post(
                    f"{scheduler}/scheduled-events",
                    json={
                        "account_id": account["id"],
                        "action": "disconnect",
                        "run_at": run_at,
                        "parameters": {"proration": "none"},
                    },
                ),
                201,
            )

        event = await eventually(schedule, timeout=30)  # the scheduler learns of the account
        assert event["state"] == "pending"

        async def completed() -> dict[str, Any]:
            body = _ok(await http.get(f"{scheduler}/scheduled-events/{event['id']}"))
            assert body["state"] == "completed", body
            return body

        done = await eventually(completed, timeout=60)
        assert done["dispatched_at"] is not None
        after = _ok(await http.get(f"{accounts}/accounts/{account['id']}"))
        assert after["disconnected_at"] is not None
        disconnections = _ok(await http.get(f"{accounts}/accounts/{account['id']}/disconnections"))
        assert len(disconnections) == 1  # fired exactly once


async def test_a_parents_disconnect_completes_and_leaves_its_children_untouched(stack):
    accounts, billing = stack.url("accounts"), stack.url("billing")
    async with httpx.AsyncClient(timeout=10, headers=AUTH) as http:
        parent = await _create_account(
            http, accounts, "Parent Co", "parent@example.com", {**ADDRESS, "line1": "1 Parent St"}
        )
        children = []
        for n in (1, 2):
            child = _ok(
                await http.post(
                    f"{accounts}/accounts",
                    json={
                        "name": f"Child {n}",
                        "status_id": 2,
                        "parent_account_id": parent["id"],
                        "serviceable_address": {**ADDRESS, "line1": f"{n} Child Lane"},
                        "primary_contact": {"name": f"Child {n}", "email": f"child{n}@example.com"},
                    },
                ),
                201,
            )
            children.append(child)
        listed = _ok(await http.get(f"{accounts}/accounts/{parent['id']}/children"))
        assert sorted(c["id"] for c in listed) == sorted(c["id"] for c in children)

        _ok(await http.post(f"{accounts}/accounts/{parent['id']}/disconnect", json={}), 201)

        async def complete() -> None:
            progress = _ok(await http.get(f"{accounts}/accounts/{parent['id']}/disconnections"))
            assert progress[0]["progress"] == "complete", progress[0]["steps"]

        await eventually(complete, timeout=60)
        for child in children:
            after = _ok(await http.get(f"{accounts}/accounts/{child['id']}"))
            assert after["status"]["name"] == "Active"
            assert after["disconnected_at"] is None
            assert after["serviceable_address"] is not None
            assert _ok(await http.get(f"{accounts}/accounts/{child['id']}/disconnections")) == []
            invoices = _ok(await http.get(f"{billing}/accounts/{child['id']}/invoices"))
            assert [i for i in invoices if i["final"]] == []
