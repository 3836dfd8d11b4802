"""Benchmark: N scheduled events due at the same instant, fired and completed.

Runs one scheduler worker (the real runtime: timer, outbox relay, consumer) against a fresh
database and a real Kafka broker, with a stand-in owner that answers every command with
CommandSucceeded on the owner's events topic. Reports the time from the due instant until
every event is completed, and the firing lag (dispatched_at - run_at) at p50/p99/max.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:39092 \\
    BENCH_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:39432/postgres \\
    uv run python bench/scheduler_firing.py --events 10000

Without BENCH_DATABASE_URL it runs on a SQLite file. Targets (issue 5): all completed
within 30 s, firing lag p99 under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from backhaul_contracts import Envelope, decode
from backhaul_contracts.events.outcomes import CommandSucceeded
from backhaul_contracts.topics import ACCOUNTS_COMMANDS, ACCOUNTS_EVENTS
from backhaul_devstack.postgres import create_database
from backhaul_kit.logging import configure_logging
from scheduler.adapters.tables import ScheduledEvent
from scheduler.bootstrap import bootstrap
from scheduler.config import SchedulerSettings
from scheduler.domain.rules import Action, State


async def _drop_database(admin_url: str, name: str) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


async def _owner(bootstrap_servers: str, prefix: str, stop: asyncio.Event) -> None:
    """Accounts, reduced to answering every DisconnectAccount with success."""
    consumer = AIOKafkaConsumer(
        f"{prefix}{ACCOUNTS_COMMANDS}",
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            for records in batch.values():
                for record in records:
                    envelope, _ = decode(record.value)
                    answer = Envelope.wrap(
                        CommandSucceeded(
                            account_id=int(envelope.subject), command_type=envelope.event_type
                        ),
                        producer="accounts",
                        subject=envelope.subject,
                        causation_id=envelope.event_id,
                    )
                    await producer.send(
                        f"{prefix}{ACCOUNTS_EVENTS}",
                        answer.to_bytes(),
                        key=envelope.subject.encode(),
                    )
            await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(events: int, accounts: int, lead: float, answers: bool) -> None:
    configure_logging("scheduler-bench", level=os.environ.get("LOG_LEVEL", "WARNING"), json=True)
    admin_url = os.environ.get("BENCH_DATABASE_URL")
    scratch = tempfile.TemporaryDirectory()
    dropped: str | None = None
    if admin_url:
        database_url = await create_database(admin_url, "bench_scheduler")
        dropped = make_url(database_url).database
    else:
        database_url = f"sqlite+aiosqlite:///{scratch.name}/scheduler.db"
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = SchedulerSettings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka,
        kafka_topic_prefix=prefix,
        kafka_topic_partitions=6,
        # A consumer group of its own: sharing "scheduler" with test runs on the same broker
        # would rebalance it whenever they start or stop.
        service_name=f"scheduler-{prefix.rstrip('.')}",
        log_level=os.environ.get("LOG_LEVEL", "WARNING"),
    )
    runtime = bootstrap(settings)
    await asyncio.to_thread(runtime.migrate)
    await runtime.start_worker()
    stop = asyncio.Event()
    owner = asyncio.create_task(_owner(kafka, prefix, stop) if answers else stop.wait())
    try:
        due = datetime.now(UTC) + timedelta(seconds=lead)
        now = datetime.now(UTC)
        rows = [
            {
                "id": uuid.uuid4(),
                "account_id": 1 + i % accounts,
                "action": Action.DISCONNECT.value,
                "parameters": {"proration": "inherit"},
                "run_at": due,
                "sequence": 0,
                "state": State.PENDING.value,
                "warnings": [],
                "outcome": {},
                "created_by": "bench",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(events)
        ]
        async with runtime.uow() as uow:
            await uow.session.execute(insert(ScheduledEvent), rows)
        print(f"{events} events for {accounts} accounts due at {due.isoformat()}")
        print(f"load average (1 min) before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        started = time.monotonic()
        awaited = State.COMPLETED if answers else State.DISPATCHED
        while True:
            async with runtime.uow() as uow:
                done = await uow.session.scalar(
                    select(func.count())
                    .select_from(ScheduledEvent)
                    .where(ScheduledEvent.state == awaited.value)
                )
            if done == events or time.monotonic() - started > 300:
                break
            await asyncio.sleep(0.2)
        async with runtime.uow() as uow:
            timings = (
                await uow.session.execute(
                    select(
                        ScheduledEvent.run_at,
                        ScheduledEvent.dispatched_at,
                        ScheduledEvent.completed_at,
                    )
                )
            ).all()
        lags = [(d - r).total_seconds() for r, d, _ in timings if d is not None]
        finished = [c for _, _, c in timings if c is not None]
        print(f"database: {make_url(database_url).get_backend_name()}")
        print(f"completed: {len(finished)}/{events}, dispatched: {len(lags)}/{events}")
        if finished:
            print(f"all completed after: {(max(finished) - due).total_seconds():.2f} s")
        print(
            "firing lag: "
            f"p50 {_percentile(lags, 0.50) * 1000:.0f} ms, "
            f"p99 {_percentile(lags, 0.99) * 1000:.0f} ms, "
            f"max {max(lags) * 1000:.0f} ms, mean {statistics.fmean(lags) * 1000:.0f} ms"
        )
    finally:
        stop.set()
        await owner
        await runtime.stop()
        if admin_url and dropped:
            await _drop_database(admin_url, dropped)
        scratch.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--lead", type=float, default=5.0, help="seconds until they are due")
    parser.add_argument(
        "--no-answers", action="store_true", help="measure firing only: nobody answers"
    )
    args = parser.parse_args()
    asyncio.run(run(args.events, args.accounts, args.lead, not args.no_answers))


if __name__ == "__main__":
    main()
