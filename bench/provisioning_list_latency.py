"""Benchmark: AccountStatusChanged published -> the address-list change seen by a router.

Runs one provisioning runtime (the real consumer, outbox relay and API, in process) against a
fresh database and a real Kafka broker. N accounts each get an IP on an "active" list; then
one AccountStatusChanged per account (Active -> Suspended) is published to Kafka at a steady
rate while a router polls the changes feed (`GET /address-lists/changes?since=cursor`). The
latency of an account is the time from its event being acknowledged by Kafka to the router
first seeing its address added to the "suspended" list. Reports p50, p99 and max.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:39092 \\
    BENCH_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:39432/postgres \\
    uv run python bench/provisioning_list_latency.py --accounts 1000

Without BENCH_DATABASE_URL it runs on a SQLite file. Target (issue 6): p99 under 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from backhaul_contracts import Envelope
from backhaul_contracts.common import StatusRef
from backhaul_contracts.events.accounts import AccountCreated, AccountStatusChanged
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.config import Role
from backhaul_kit.logging import configure_logging
from provisioning.bootstrap import bootstrap
from provisioning.config import ProvisioningSettings

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
SUSPENDED = StatusRef(id=7, name="Suspended", activates_account=False)


async def _fresh_database(admin_url: str) -> str:
    name = f"bench_provisioning_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(accounts: int, rate: float, poll_interval: float) -> dict[str, float]:
    bootstrap_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    admin_url = os.environ.get("BENCH_DATABASE_URL")
    database_url = (
        await _fresh_database(admin_url)
        if admin_url
        else f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='bench-prov-')}/provisioning.db"
    )
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = ProvisioningSettings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap_servers,
        kafka_topic_prefix=prefix,
        kafka_topic_partitions=6,
        log_level="WARNING",
    )
    configure_logging("provisioning", level="WARNING", json=True)
    runtime = bootstrap(settings)
    await asyncio.to_thread(runtime.migrate)
    await runtime.start_worker()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=0)
    await producer.start()
    topic = settings.topic(ACCOUNTS_EVENTS)
    app = runtime.create_app(Role.API)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            pool = await client.post("/ip-pools", json={"name": "bench", "cidr": "10.128.0.0/16"})
            await client.post(
                "/address-lists", json={"name": "active", "rule": {"activating": True}}
            )
            suspended = (
                await client.post(
                    "/address-lists",
                    json={"name": "suspended", "rule": {"status_ids": [SUSPENDED.id]}},
                )
            ).json()
            ids = list(range(1, accounts + 1))
            now = datetime.now(UTC)
            for account_id in ids:
                event = AccountCreated(
                    account_id=account_id, name=f"bench {account_id}", status=ACTIVE, created_at=now
                )
                envelope = Envelope.wrap(event, producer="bench", subject=account_id)
                await producer.send(topic, envelope.to_bytes(), key=str(account_id).encode())
            await producer.flush()

            address_of: dict[int, str] = {}
            for account_id in ids:
                while True:
                    answer = await client.post(
                        f"/accounts/{account_id}/ip-assignments",
                        json={"pool_id": pool.json()["id"]},
                    )
                    if answer.status_code == 201:
                        address_of[account_id] = answer.json()["address"]
                        break
                    await asyncio.sleep(0.05)  # the account's AccountCreated is still on its way
            since = 0  # the router starts from where the feed is now
            while True:
                page = (
                    await client.get(
                        "/address-lists/changes", params={"since": since, "limit": 10000}
                    )
                ).json()
                if not page["changes"]:
                    break
                since = page["cursor"]
            account_of = {address: account_id for account_id, address in address_of.items()}

            published: dict[int, float] = {}
            seen: dict[int, float] = {}

            async def router() -> None:
                nonlocal since
                while len(seen) < accounts:
                    answer = (
                        await client.get(
                            "/address-lists/changes", params={"since": since, "limit": 10000}
                        )
                    ).json()
                    arrived = time.monotonic()
                    for change in answer["changes"]:
                        if (
                            change["address_list_id"] == suspended["id"]
                            and change["action"] == "add"
                        ):
                            seen.setdefault(account_of[change["address"]], arrived)
                    since = answer["cursor"]
                    await asyncio.sleep(poll_interval)

            watcher = asyncio.create_task(router())
            gap = 1 / rate
            started = time.monotonic()
            for index, account_id in enumerate(ids):
                await asyncio.sleep(max(0.0, started + index * gap - time.monotonic()))
                event = AccountStatusChanged(
                    account_id=account_id,
                    previous_status=ACTIVE,
                    status=SUSPENDED,
                    changed_by="bench",
                    changed_at=datetime.now(UTC),
                )
                envelope = Envelope.wrap(event, producer="bench", subject=account_id)
                await producer.send_and_wait(
                    topic, envelope.to_bytes(), key=str(account_id).encode()
                )
                published[account_id] = time.monotonic()
            await asyncio.wait_for(watcher, timeout=120)
    finally:
        await producer.stop()
        await runtime.stop()
    latencies = [(seen[a] - published[a]) * 1000 for a in ids]
    return {
        "accounts": accounts,
        "rate_per_s": rate,
        "p50_ms": statistics.median(latencies),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="status changes per second")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.02,
        help="how often the router reads the changes feed (s)",
    )
    args = parser.parse_args()
    result = asyncio.run(run(args.accounts, args.rate, args.poll_interval))
    backend = "postgresql" if os.environ.get("BENCH_DATABASE_URL") else "sqlite"
    print(
        f"{backend}: {result['accounts']} accounts at {result['rate_per_s']:.0f}/s: "
        f"p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, "
        f"max {result['max_ms']:.0f} ms (target p99 < 500 ms)"
    )


if __name__ == "__main__":
    main()
