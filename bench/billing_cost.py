"""CPU and SQL statements per event of billing's consumer handlers in a disconnect storm.

`python -m bench.billing_cost [--accounts 2000] [--batch 500] [--database-url URL]`
bootstraps billing on a fresh SQLite file (or the PostgreSQL database given, which must be
empty), defines one recurring service, creates 2N accounts (AccountCreated through the
consumer) each with that service added (the API handler, which debits the rest of April),
then feeds through `runtime.consumer.process_batch`, in batches, as Kafka would deliver them:

- `status_change`: N AccountStatusChanged, Active -> Blocked (billing stops);
- `disconnect_credit_unused`: N AccountDisconnected of those accounts, unused days credited;
- `disconnect_none`: N AccountDisconnected of the other N accounts, no proration.

Prints JSON: CPU microseconds (time.process_time) and SQL statements (a
`before_cursor_execute` listener) per event of each phase. `--profile PHASE` writes a
cProfile of that phase to billing_cost.prof; `--trace-sql` prints the statements to stderr.
No Kafka: it measures the handlers and the kit's consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import event

from backhaul_contracts import Event
from backhaul_contracts.common import Proration, ServiceKind, StatusRef
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
)
from backhaul_kit.logging import configure_logging
from backhaul_kit.messaging.consumer import Record
from billing.bootstrap import bootstrap
from billing.config import BillingSettings
from billing.service_layer import account_services, catalogue

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
BLOCKED = StatusRef(id=9, name="Blocked", activates_account=False)
DISCONNECTED = StatusRef(id=5, name="Disconnected", activates_account=False)
ADDED_ON = date(2026, 4, 1)  # billing day 1: April is billed through the 30th
GONE_AT = datetime(2026, 4, 10, 12, tzinfo=UTC)  # 20 unused days to credit


def _record(event: Event, subject: int, offset: int) -> Record:
    return Record.of_event(event, subject=subject, offset=offset, producer="bench")


def _disconnect(account_id: int, proration: Proration) -> AccountDisconnected:
    return AccountDisconnected(
        account_id=account_id,
        account_name=f"Account {account_id}",
        disconnection_id=uuid.uuid4(),
        disconnected_at=GONE_AT,
        disconnected_by="bench",
        previous_status=BLOCKED,
        status=DISCONNECTED,
        proration=proration,
    )


async def run(
    url: str, accounts: int, batch: int, profile: str | None, trace: bool = False
) -> dict[str, Any]:
    runtime = bootstrap(BillingSettings(database_url=url))
    await asyncio.to_thread(runtime.migrate)
    consumer = runtime.consumer
    offset = 0

    async def feed(events: list[tuple[Event, int]]) -> None:
        nonlocal offset
        records = []
        for item, subject in events:
            records.append(_record(item, subject, offset))
            offset += 1
        for i in range(0, len(records), batch):
            await consumer.process_batch(records[i : i + batch])

    service = await catalogue.create_service(
        runtime.uow(),
        catalogue.NewService(name="TV", kind=ServiceKind.RECURRING, price=Decimal("30.00")),
    )
    ids = range(1, 2 * accounts + 1)
    await feed(
        [
            (
                AccountCreated(
                    account_id=n,
                    name=f"Account {n}",
                    status=ACTIVE,
                    account_type="Residential",
                    billing_day=1,
                    created_at=GONE_AT,
                ),
                n,
            )
            for n in ids
        ]
    )
    for n in ids:
        await account_services.add_account_service(
            runtime.uow(), n, service.id, actor="bench", day=ADDED_ON
        )

    statements = 0

    def count(_c: object, _cur: object, statement: str, *_: object) -> None:
        nonlocal statements
        statements += 1
        if trace:
            print("SQL", " ".join(statement.split())[:200], file=sys.stderr)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", count)
    phases: list[tuple[str, list[tuple[Event, int]]]] = [
        (
            "status_change",
            [
                (
                    AccountStatusChanged(
                        account_id=n,
                        previous_status=ACTIVE,
                        status=BLOCKED,
                        changed_by="bench",
                        changed_at=GONE_AT,
                    ),
                    n,
                )
                for n in range(1, accounts + 1)
            ],
        ),
        (
            "disconnect_credit_unused",
            [(_disconnect(n, Proration.CREDIT_UNUSED), n) for n in range(1, accounts + 1)],
        ),
        (
            "disconnect_none",
            [(_disconnect(n, Proration.NONE), n) for n in range(accounts + 1, 2 * accounts + 1)],
        ),
    ]
    out: dict[str, Any] = {"accounts": accounts, "batch": batch, "backend": runtime.db.engine.name}
    for name, events in phases:
        if trace:
            print(f"-- {name}", file=sys.stderr)
        profiler = cProfile.Profile() if profile == name else None
        statements = 0
        started = time.process_time()
        if profiler:
            profiler.enable()
        await feed(events)
        if profiler:
            profiler.disable()
            profiler.dump_stats("billing_cost.prof")
        cpu = time.process_time() - started
        out[f"{name}_cpu_us_per_event"] = round(cpu / len(events) * 1e6, 1)
        out[f"{name}_statements_per_event"] = round(statements / len(events), 2)
    event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", count)
    await runtime.db.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.billing_cost")
    parser.add_argument("--accounts", type=int, default=2000, help="N (2N accounts are made)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--database-url", default=None, help="an empty database; default SQLite")
    parser.add_argument("--profile", default=None, help="a phase to cProfile")
    parser.add_argument("--trace-sql", action="store_true", help="statements on stderr")
    parser.add_argument("--log-level", default="INFO", help="the services' default")
    args = parser.parse_args()
    # Logs as a service writes them (JSON lines on stderr): send stderr to /dev/null.
    configure_logging("bench", level=args.log_level, json=True)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(scratch) / 'billing-cost.db'}"
        print(
            json.dumps(
                asyncio.run(run(url, args.accounts, args.batch, args.profile, args.trace_sql))
            )
        )


if __name__ == "__main__":
    main()
