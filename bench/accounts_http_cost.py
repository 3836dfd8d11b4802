"""CPU per request of the accounts API, and per completion event of its disconnect fan-out.

`python -m bench.accounts_http_cost [--accounts 400] [--batch 300] [--profile out.pstats]`
bootstraps accounts on a SQLite file, builds its API app (`Role.API`, every middleware and
the bearer-token check included) and drives it in-process through `httpx.ASGITransport`:
it creates the accounts (each with a serviceable address and a primary contact with an
email, as bench/fanout/api.py does), disconnects them, then feeds the fan-out's completion
events for those disconnections (a final InvoiceIssued, AccountNetworkReleased, EmailSent)
through `runtime.consumer.process_batch`. It prints CPU milliseconds per create and per
disconnect and CPU microseconds per completion event (`time.process_time`: the client's
share is in it too, the same before and after). No Kafka, no server: what accounts adds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import tempfile
import time
from contextlib import nullcontext
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx

from accounts.bootstrap import bootstrap
from accounts.config import AccountsSettings
from backhaul_contracts import Event
from backhaul_contracts.common import ReleasedIp
from backhaul_contracts.events.billing import InvoiceIssued
from backhaul_contracts.events.notifications import EmailSent
from backhaul_contracts.events.provisioning import AccountNetworkReleased
from backhaul_kit.config import Role
from backhaul_kit.logging import configure_logging
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.runtime import ServiceRuntime
from backhaul_kit.testing import bearer


def _account_body(account_id: int) -> dict[str, Any]:
    return {
        "id": account_id,
        "name": f"Bench Customer {account_id}",
        "serviceable_address": {
            "line1": f"{account_id} Bench Street",
            "city": "Springfield",
            "postal_code": "99999",
            "country": "US",
        },
        "primary_contact": {
            "name": f"Customer {account_id}",
            "email": f"customer{account_id}@bench.example",
        },
    }


def _record(event: Event, producer: str, subject: int, offset: int) -> Record:
    return Record.of_event(event, subject=subject, offset=offset, producer=producer)


def _completions(disconnections: list[tuple[int, UUID]]) -> list[Record]:
    """The three completion events of each disconnection, one disconnection after another."""
    now = datetime.now(UTC)
    records: list[Record] = []
    for n, (account_id, disconnection_id) in enumerate(disconnections):
        events: list[tuple[Event, str]] = [
            (
                InvoiceIssued(
                    account_id=account_id,
                    invoice_id=n + 1,
                    number=f"INV-{n + 1:06d}",
                    total=Decimal("12.34"),
                    currency="USD",
                    issued_at=now,
                    due_date=date(2026, 12, 1),
                    final=True,
                    disconnection_id=disconnection_id,
                ),
                "billing",
            ),
            (
                AccountNetworkReleased(
                    account_id=account_id,
                    disconnection_id=disconnection_id,
                    released_at=now,
                    released_ips=[ReleasedIp(assignment_id=uuid4(), address="100.64.0.1")],
                    removed_list_entries=1,
                ),
                "provisioning",
            ),
            (
                EmailSent(
                    account_id=account_id,
                    email_id=uuid4(),
                    recipient=f"customer{account_id}@bench.example",
                    subject="Your service is disconnected",
                    trigger_event_type="AccountDisconnected",
                    trigger_event_id=uuid4(),
                    disconnection_id=disconnection_id,
                    sent_at=now,
                ),
                "notifications",
            ),
        ]
        for event, producer in events:
            records.append(_record(event, producer, account_id, len(records)))
    return records


async def _drive(runtime: ServiceRuntime, accounts: int, batch: int) -> dict[str, float]:
    app = runtime.create_app(Role.API)
    ids = list(range(1, accounts + 1))
    out: dict[str, float] = {"accounts": accounts}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers=bearer(runtime, "bench@backhaul"),
    ) as client:
        started = time.process_time()
        for account_id in ids:
            response = await client.post("/accounts", json=_account_body(account_id))
            assert response.status_code == 201, response.text
        out["create_cpu_ms"] = round((time.process_time() - started) / accounts * 1e3, 3)

        disconnections: list[tuple[int, UUID]] = []
        started = time.process_time()
        for account_id in ids:
            response = await client.post(f"/accounts/{account_id}/disconnect", json={})
            assert response.status_code == 201, response.text
            disconnections.append((account_id, UUID(response.json()["id"])))
        out["disconnect_cpu_ms"] = round((time.process_time() - started) / accounts * 1e3, 3)

        records = _completions(disconnections)
        started = time.process_time()
        for i in range(0, len(records), batch):
            outcomes = await runtime.consumer.process_batch(records[i : i + batch])
            assert all(o is Outcome.HANDLED for o in outcomes), outcomes
        out["completion_cpu_us_per_event"] = round(
            (time.process_time() - started) / len(records) * 1e6, 1
        )

        # The fan-out really landed: every disconnection is complete.
        last = (await client.get(f"/accounts/{ids[-1]}/disconnections")).json()[0]
        assert last["progress"] == "complete", last
    return out


async def run(accounts: int, batch: int, profile: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        settings = AccountsSettings(database_url=f"sqlite+aiosqlite:///{Path(scratch) / 'a.db'}")
        runtime = bootstrap(settings)
        await asyncio.to_thread(runtime.migrate)
        profiler = cProfile.Profile() if profile else None
        try:
            with profiler or nullcontext():
                return await _drive(runtime, accounts, batch)
        finally:
            if profiler is not None and profile:
                profiler.dump_stats(profile)
            await runtime.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accounts_http_cost")
    parser.add_argument("--accounts", type=int, default=400)
    parser.add_argument("--batch", type=int, default=300, help="completion events per batch")
    parser.add_argument("--profile", help="write a cProfile of the whole run to this file")
    parser.add_argument("--log-level", default="INFO", help="the services' default")
    args = parser.parse_args()
    # Logs as a service writes them (JSON lines on stderr): send stderr to /dev/null.
    configure_logging("accounts", level=args.log_level, json=True)
    # The client's own line per request is not the service's cost.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    print(json.dumps(asyncio.run(run(args.accounts, args.batch, args.profile))))


if __name__ == "__main__":
    main()
