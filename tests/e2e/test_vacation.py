"""A vacation end to end (seed 002): leave, then return, through the scheduler, accounts,
billing and provisioning as separate processes; and a scheduled second data service that
fails with billing's reason recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from backhaul_devstack.__main__ import development_token
from backhaul_kit.testing import eventually

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {development_token('e2e@isp')}"}


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json()


async def test_a_vacation_swaps_status_service_and_lists_and_back(stack):
    accounts, billing = stack.url("accounts"), stack.url("billing")
    scheduler, provisioning = stack.url("scheduler"), stack.url("provisioning")
    tag = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(timeout=10, headers=AUTH) as http:
        vacation_status = _ok(
            await http.post(
                f"{accounts}/account-statuses",
                json={
                    "name": f"Vacation {tag}",
                    "activates_account": True,
                    "icon": "sun",
                    "colour": "cyan",
                },
            ),
            201,
        )
        fibre = _ok(
            await http.post(
                f"{billing}/services",
                json={
                    "name": f"Fibre 100 {tag}",
                    "kind": "data",
                    "price": "60.00",
                    "download_kbps": 100_000,
                    "upload_kbps": 20_000,
                },
            ),
            201,
        )
        slow = _ok(
            await http.post(
                f"{billing}/services",
                json={
                    "name": f"Vacation 1M {tag}",
                    "kind": "data",
                    "price": "5.00",
                    "download_kbps": 1_000,
                    "upload_kbps": 1_000,
                },
            ),
            201,
        )
        pool = _ok(
            await http.post(
                f"{provisioning}/ip-pools",
                json={"name": f"vacation {tag}", "cidr": "100.66.0.0/24"},
            ),
            201,
        )
        away = _ok(
            await http.post(
                f"{provisioning}/address-lists",
                json={"name": f"vacation-{tag}", "rule": {"status_ids": [vacation_status["id"]]}},
            ),
            201,
        )

        account = _ok(
            await http.post(
                f"{accounts}/accounts",
                json={
                    "name": "Ada Away",
                    "status_id": 2,
                    "primary_contact": {"name": "Ada", "email": "ada.away@example.com"},
                },
            ),
            201,
        )
        account_id = account["id"]

        async def add_fibre() -> Any:
            return _ok(
                await http.post(
                    f"{billing}/accounts/{account_id}/services", json={"service_id": fibre["id"]}
                ),
                201,
            )

        await eventually(add_fibre)

        async def assign() -> Any:
            return _ok(
                await http.post(
                    f"{provisioning}/accounts/{account_id}/ip-assignments",
                    json={"pool_id": pool["id"]},
                ),
                201,
            )

        address = (await eventually(assign))["address"]

        async def data_services() -> list[int]:
            rows = _ok(await http.get(f"{billing}/accounts/{account_id}/services"))
            return [
                r["service"]["id"]
                for r in rows
                if r["removed_at"] is None and r["service"]["kind"] == "data"
            ]

        async def on_away_list() -> bool:
            entries = _ok(await http.get(f"{provisioning}/address-lists/{away['id']}/entries"))
            return address in {e["address"] for e in entries}

        async def fibre_replicated() -> None:
            # The vacation swaps out the account's current data service as the scheduler knows
            # it: wait until it knows of the fibre (AccountServiceAdded), which shows as a
            # warning on adding a second data service. 404 until it knows of the account.
            probe = _ok(
                await http.post(
                    f"{scheduler}/scheduled-events",
                    json={
                        "account_id": account_id,
                        "action": "add_service",
                        "run_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
                        "parameters": {"service_id": slow["id"]},
                    },
                ),
                201,
            )
            _ok(await http.post(f"{scheduler}/scheduled-events/{probe['id']}/cancel"))
            assert fibre["name"] in " ".join(probe["warnings"]), probe

        await eventually(fibre_replicated, timeout=20)

        async def book() -> Any:
            leave = datetime.now(UTC) + timedelta(seconds=8)
            return _ok(
                await http.post(
                    f"{scheduler}/vacations",
                    json={
                        "account_id": account_id,
                        "leave_at": leave.isoformat(),
                        "return_at": (leave + timedelta(seconds=12)).isoformat(),
                        "vacation_status_id": vacation_status["id"],
                        "vacation_service_id": slow["id"],
                    },
                ),
                201,
            )

        # 422 until the scheduler learns of the vacation status from the catalogue events.
        vacation = await eventually(book, timeout=20)
        assert vacation["normal_service_id"] == fibre["id"], vacation

        async def left() -> None:
            status = _ok(await http.get(f"{accounts}/accounts/{account_id}"))["status"]
            assert status["id"] == vacation_status["id"]
            assert await data_services() == [slow["id"]]
            assert await on_away_list()

        await eventually(left, timeout=60)

        async def returned() -> None:
            status = _ok(await http.get(f"{accounts}/accounts/{account_id}"))["status"]
            assert status["id"] == 2
            assert await data_services() == [fibre["id"]]
            assert not await on_away_list()
            body = _ok(await http.get(f"{scheduler}/vacations/{vacation['id']}"))
            assert body["state"] == "completed", body

        await eventually(returned, timeout=90)

        # A scheduled add of a second data service fails, with billing's reason recorded.
        async def schedule_second() -> Any:
            return _ok(
                await http.post(
                    f"{scheduler}/scheduled-events",
                    json={
                        "account_id": account_id,
                        "action": "add_service",
                        "run_at": (datetime.now(UTC) + timedelta(seconds=3)).isoformat(),
                        "parameters": {"service_id": slow["id"]},
                    },
                ),
                201,
            )

        second = await schedule_second()
        assert second["warnings"], "the scheduler can already tell it will fail"

        async def failed() -> Any:
            body = _ok(await http.get(f"{scheduler}/scheduled-events/{second['id']}"))
            assert body["state"] == "failed", body
            return body

        body = await eventually(failed, timeout=60)
        assert "remove the existing data service first" in body["failure_reason"]
        assert await data_services() == [fibre["id"]]
