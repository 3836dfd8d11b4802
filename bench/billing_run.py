"""Benchmark: one billing run over N activating accounts (issue 4's performance target).

    uv run python bench/billing_run.py --accounts 100000                   # SQLite file
    uv run python bench/billing_run.py --accounts 100000 \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:39432/postgres --create

Each account has one data service and one recurring service, billing day 1, nothing billed
yet. The run debits both for the period, invoices them, writes InvoiceIssued to the outbox,
and then re-evaluates delinquency; only the run is timed, not the set-up. A second run on
the same date is timed too (it must bill nobody). Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from billing.adapters.tables import AccountService, BillingAccount, Service
from billing.bootstrap import bootstrap
from billing.config import BillingSettings
from billing.service_layer import billing_runs

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = 5000


async def _create_postgres_database(admin_url: str) -> str:
    import asyncpg  # the PostgreSQL driver the services use

    name = f"bench_billing_{uuid.uuid4().hex[:8]}"
    url = make_url(admin_url)
    connection = await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_postgres_database(admin_url: str, url: str) -> None:
    import asyncpg

    admin = make_url(admin_url)
    connection = await asyncpg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.username,
        password=admin.password,
        database=admin.database or "postgres",
    )
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await connection.close()


async def _populate(runtime, accounts: int) -> None:
    now = datetime.now(UTC)
    async with runtime.db.transaction() as session:
        data = Service(
            name="Fibre 100",
            kind="data",
            price=Decimal("49.99"),
            currency="USD",
            download_kbps=100_000,
            upload_kbps=20_000,
            prorates=True,
            created_at=now,
        )
        tv = Service(
            name="TV",
            kind="recurring",
            price=Decimal("12.50"),
            currency="USD",
            prorates=True,
            created_at=now,
        )
        session.add_all([data, tv])
        await session.flush()
        service_ids = (data.id, tv.id)
    for start in range(1, accounts + 1, CHUNK):
        ids = range(start, min(start + CHUNK, accounts + 1))
        async with runtime.db.transaction() as session:
            await session.execute(
                insert(BillingAccount),
                [
                    {
                        "id": i,
                        "name": f"Account {i}",
                        "status_id": 2,
                        "status_name": "Active",
                        "activates": True,
                        "parent_id": None,
                        "billing_day": 1,
                        "delinquent": False,
                        "tax_exempt": False,
                        "currency": "USD",
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            await session.execute(
                insert(AccountService),
                [
                    {
                        "account_id": i,
                        "service_id": service_id,
                        "quantity": 1,
                        "price": Decimal("49.99")
                        if service_id == service_ids[0]
                        else Decimal("12.50"),
                        "price_override": False,
                        "prorates": True,
                        "added_at": now,
                    }
                    for i in ids
                    for service_id in service_ids
                ],
            )


async def _run(url: str, accounts: int) -> dict[str, object]:
    runtime = bootstrap(BillingSettings(database_url=url))
    await asyncio.to_thread(runtime.migrate)
    await _populate(runtime, accounts)
    run_date = date(2030, 1, 1)
    started, cpu = time.perf_counter(), time.process_time()
    run = await billing_runs.run_billing(runtime.uow(), run_date, actor="bench")
    first, first_cpu = time.perf_counter() - started, time.process_time() - cpu
    started = time.perf_counter()
    rerun = await billing_runs.run_billing(runtime.uow(), run_date, actor="bench")
    second = time.perf_counter() - started
    async with runtime.db.transaction() as session:
        outbox = await session.scalar(text("SELECT count(*) FROM outbox_messages"))
    await runtime.db.dispose()
    assert run.accounts_billed == accounts and run.invoices_issued == accounts, run
    assert rerun.accounts_billed == 0, rerun
    return {
        "accounts": accounts,
        "backend": make_url(url).get_backend_name(),
        "run_seconds": round(first, 2),
        "run_cpu_seconds": round(first_cpu, 2),
        "accounts_per_second": round(accounts / first),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "rerun_seconds": round(second, 2),
        "invoices_issued": run.invoices_issued,
        "total": run.total,
        "outbox_events": outbox,
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: a fresh SQLite file; with --create, a PostgreSQL "
        "server's admin URL to create a fresh database on",
    )
    parser.add_argument(
        "--create",
        action="store_true",
        help="create a fresh PostgreSQL database on the server given",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite+aiosqlite:///{scratch}/billing-bench.db"
        if args.create:
            url = asyncio.run(_create_postgres_database(url))
        result = asyncio.run(_run(url, args.accounts))
    result["command"] = "uv run python bench/billing_run.py " + " ".join(sys.argv[1:])
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    name = f"billing_run_{result['backend']}_{args.accounts}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
