"""Benchmark: AccountStatusChanged published -> the address-list change seen by a router.

Runs provisioning as deployed, a worker process (consumer, outbox relay) and an API process,
against a fresh database and a real Kafka broker. N accounts each get an IP on an "active"
list; then one AccountStatusChanged per account (Active -> Suspended) is published to Kafka at
a steady rate while a router polls the changes feed (`GET /address-lists/changes?since=cursor`). The
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
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from backhaul_contracts import Envelope
from backhaul_contracts.common import StatusRef
from backhaul_contracts.events.accounts import AccountCreated, AccountStatusChanged
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_devstack.kafka_broker import free_port
from backhaul_devstack.postgres import create_database
from backhaul_kit.auth import issue_token
from backhaul_kit.config import DEV_JWT_SECRET
from provisioning.adapters.tables import AccountReplica

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
SUSPENDED = StatusRef(id=7, name="Suspended", activates_account=False)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(accounts: int, rate: float, poll_interval: float) -> dict[str, float]:
    bootstrap_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    admin_url = os.environ.get("BENCH_DATABASE_URL")
    database_url = (
        await create_database(admin_url, "bench_provisioning")
        if admin_url
        else f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='bench-prov-')}/provisioning.db"
    )
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_TOPIC_PARTITIONS": "6",
        "LOG_LEVEL": "WARNING",
    }
    # As deployed: one worker process (consumer, relay) and one API process the router reads.
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "provisioning", "migrate", env=env
    )
    await migrate.wait()
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "provisioning",
            "serve",
            "--role",
            role,
            *(["--port", str(port)] if role == "api" else ["--port", str(free_port())]),
            env={**env, "AUTO_MIGRATE": "false"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for role in ("worker", "api")
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=0)
    await producer.start()
    topic = f"{prefix}{ACCOUNTS_EVENTS}"
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            headers={"Authorization": f"Bearer {issue_token(DEV_JWT_SECRET)}"},
        ) as client:
            deadline = time.monotonic() + 180  # a loaded machine starts slowly
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("provisioning did not become ready in 180 s")
                await asyncio.sleep(0.2)
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
            published_wall: dict[int, datetime] = {}
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
                published_wall[account_id] = datetime.now(UTC)
            await asyncio.wait_for(watcher, timeout=120)
    finally:
        await producer.stop()
        for process in processes:
            process.terminate()
            await process.wait()
    # Where the time goes: the handler stamped the replica's updated_at when it ran.
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(AccountReplica.account_id, AccountReplica.updated_at)
        )
        handled = {account_id: at for account_id, at in rows.all()}
    await engine.dispose()
    latencies = [(seen[a] - published[a]) * 1000 for a in ids]
    consumed = [(handled[a] - published_wall[a]).total_seconds() * 1000 for a in ids]
    return {
        "accounts": accounts,
        "rate_per_s": rate,
        "p50_ms": statistics.median(latencies),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "handled_p50_ms": statistics.median(consumed),
        "handled_p99_ms": _percentile(consumed, 0.99),
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
        f"max {result['max_ms']:.0f} ms (target p99 < 500 ms); of which published -> handled: "
        f"p50 {result['handled_p50_ms']:.0f} ms, p99 {result['handled_p99_ms']:.0f} ms"
    )


if __name__ == "__main__":
    main()
