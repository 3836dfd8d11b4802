"""Benchmark: fill a /16 pool with host addresses, one "next free" assignment at a time.

Goes through the service layer as the API does (`assign_ip`, each in its own
transaction, with the pool lock, the reconcile and the outbox event), on a fresh database:
N accounts each take the next free address of 10.64.0.0/16. Prints the assignments per
second of the first and of the last 1,000 (the cost of an assignment in an empty pool and in
a nearly full one), the total time, and the CPU this process spent per assignment (a steadier
figure than wall time on a shared machine; the database server's own work is not in it).

    BENCH_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:39432/postgres \\
    uv run --no-sync python bench/ipam_fill.py --assignments 10000

Without BENCH_DATABASE_URL it runs on a SQLite file. No Kafka is needed: the events stay in
the outbox. Results: bench/ipam_fill.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime

from sqlalchemy.engine import make_url

from backhaul_devstack.postgres import create_database
from provisioning.adapters.tables import AccountReplica
from provisioning.bootstrap import bootstrap
from provisioning.config import ProvisioningSettings
from provisioning.service_layer.assignments import AssignIp, assign_ip
from provisioning.service_layer.pools import create_pool

WINDOW = 1000


async def run(assignments: int, cidr: str) -> None:
    admin_url = os.environ.get("BENCH_DATABASE_URL")
    database_url = (
        await create_database(admin_url, "bench_ipam")
        if admin_url
        else f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='bench-ipam-')}/provisioning.db"
    )
    runtime = bootstrap(
        ProvisioningSettings(
            database_url=database_url,
            kafka_bootstrap_servers="127.0.0.1:1",
            kafka_topic_prefix="b.",
        )
    )
    await asyncio.to_thread(runtime.migrate)
    try:
        now = datetime.now(UTC)
        async with runtime.db.transaction() as session:
            session.add_all(
                AccountReplica(
                    account_id=account_id,
                    status_id=2,
                    status_name="Active",
                    activates=True,
                    delinquent=False,
                    updated_at=now,
                )
                for account_id in range(1, assignments + 1)
            )
        pool = await create_pool(runtime.uow(), name="bench", cidr=cidr)

        durations: list[float] = []
        cpu: list[float] = []
        started = time.perf_counter()
        for account_id in range(1, assignments + 1):
            began, began_cpu = time.perf_counter(), time.process_time()
            await assign_ip(
                runtime.uow(),
                AssignIp(account_id=account_id, pool_id=pool.id),
                actor="bench",
            )
            durations.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
            if account_id % WINDOW == 0:
                rate = WINDOW / sum(durations[-WINDOW:])
                cpu_ms = 1000 * sum(cpu[-WINDOW:]) / WINDOW
                print(
                    f"  {account_id:>6} assigned, the last {WINDOW}: {rate:7.1f}/s "
                    f"({cpu_ms:.1f} ms of this process's CPU each)",
                    flush=True,
                )
        total = time.perf_counter() - started
    finally:
        await runtime.db.dispose()

    window = min(WINDOW, len(durations))
    first = window / sum(durations[:window])
    last = window / sum(durations[-window:])
    first_cpu = 1000 * sum(cpu[:window]) / window
    last_cpu = 1000 * sum(cpu[-window:]) / window
    kind = make_url(database_url).get_backend_name()
    print(
        f"{kind}: {assignments} assignments in {total:.1f} s; "
        f"first {window}: {first:.1f}/s ({first_cpu:.1f} ms CPU each), "
        f"last {window}: {last:.1f}/s ({last_cpu:.1f} ms CPU each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignments", type=int, default=10_000)
    parser.add_argument("--cidr", default="10.64.0.0/16")
    args = parser.parse_args()
    asyncio.run(run(args.assignments, args.cidr))


if __name__ == "__main__":
    main()
