"""CPU and statements per event of provisioning's storm handlers: status changes, disconnects.

`python -m bench.provisioning_cost [--accounts 2000] [--batch 500] [--database-url URL]`
bootstraps provisioning on a fresh SQLite file (or on an empty PostgreSQL database given by
URL), creates a pool, an address list for the Active status and one for Blocked, and N
accounts (AccountCreated through the consumer), each given one IP by the API handler, so it
sits on the active list. Then it feeds, through `runtime.consumer.process_batch` in batches
as Kafka would deliver them (records with an `event_type` header):

- `status`: N AccountStatusChanged Active -> Blocked (each account moves between the lists);
- `disconnect`: N AccountDisconnected (each IP ended, its entry removed, one release each).

It prints JSON: CPU µs per event (time.process_time, the whole process, and
time.thread_time, the event loop's thread alone: on SQLite the rest is aiosqlite's thread
running SQLite) and SQL statements per event (a `before_cursor_execute` listener on the
engine) for each phase. No Kafka.
`--profile DIR` also writes a cProfile of each phase to DIR/<phase>.pstats.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import event as sa_event

from backhaul_contracts.common import StatusRef
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
)
from backhaul_kit.logging import configure_logging
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.runtime import ServiceRuntime
from backhaul_kit.testing import Handlers
from provisioning.bootstrap import bootstrap
from provisioning.config import ProvisioningSettings
from provisioning.service_layer import address_lists, assignments, pools

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
BLOCKED = StatusRef(id=9, name="Blocked", activates_account=False)
INACTIVE = StatusRef(id=3, name="Inactive", activates_account=False)


def _record(event: Any, subject: int, offset: int) -> Record:
    return Record.of_event(event, subject=subject, offset=offset, producer="bench")  # type: ignore[arg-type]


def _settings(database_url: str) -> ProvisioningSettings:
    # No broker: nothing is published, events stay in the outbox.
    return ProvisioningSettings(
        database_url=database_url,
        kafka_bootstrap_servers="127.0.0.1:1",
        kafka_create_topics=False,
        kafka_topic_prefix="bench.",
    )


async def _feed(runtime: ServiceRuntime, records: list[Record], batch: int) -> None:
    for i in range(0, len(records), batch):
        outcomes = await runtime.consumer.process_batch(records[i : i + batch])
        if any(o is not Outcome.HANDLED for o in outcomes):
            raise RuntimeError(f"not all handled: {set(outcomes)}")


async def _setup(runtime: ServiceRuntime, accounts: int, batch: int, now: datetime) -> None:
    handlers = Handlers(runtime)
    await _feed(
        runtime,
        [
            _record(
                AccountCreated(account_id=n, name=f"Account {n}", status=ACTIVE, created_at=now),
                n,
                n,
            )
            for n in range(1, accounts + 1)
        ],
        batch,
    )
    pool, _ = await handlers.call(pools.create_pool, name="bench", cidr="10.64.0.0/16")
    for name, status in (("active", ACTIVE), ("blocked", BLOCKED)):
        await handlers.call(
            address_lists.create_address_list, name=name, rule={"status_ids": [status.id]}
        )
    for n in range(1, accounts + 1):
        await handlers.call(
            assignments.assign_ip,
            assignments.AssignIp(account_id=n, pool_id=pool.id),
            actor="bench",
        )


async def run(
    accounts: int, batch: int, database_url: str | None, profile: Path | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        url = database_url or f"sqlite+aiosqlite:///{Path(scratch) / 'provisioning.db'}"
        runtime = bootstrap(_settings(url))
        await asyncio.to_thread(runtime.migrate)
        now = datetime.now(UTC)
        await _setup(runtime, accounts, batch, now)
        statements = 0

        def count(*_: Any) -> None:
            nonlocal statements
            statements += 1

        sa_event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", count)
        ids = range(1, accounts + 1)
        phases = {
            "status": [
                _record(
                    AccountStatusChanged(
                        account_id=n,
                        previous_status=ACTIVE,
                        status=BLOCKED,
                        changed_by="bench",
                        changed_at=now,
                    ),
                    n,
                    n,
                )
                for n in ids
            ],
            "disconnect": [
                _record(
                    AccountDisconnected(
                        account_id=n,
                        account_name=f"Account {n}",
                        disconnection_id=uuid4(),
                        disconnected_at=now,
                        disconnected_by="bench",
                        previous_status=BLOCKED,
                        status=INACTIVE,
                    ),
                    n,
                    n,
                )
                for n in ids
            ],
        }
        out: dict[str, Any] = {"database": url.split(":", 1)[0], "accounts": accounts}
        for name, records in phases.items():
            statements = 0
            profiler = cProfile.Profile() if profile else None
            started, started_main = time.process_time(), time.thread_time()
            if profiler:
                profiler.enable()
            await _feed(runtime, records, batch)
            if profiler:
                profiler.disable()
            cpu, main = time.process_time() - started, time.thread_time() - started_main
            if profiler and profile:
                profiler.dump_stats(str(profile / f"{name}.pstats"))
            out[f"{name}_cpu_us_per_event"] = round(cpu / len(records) * 1e6, 1)
            # The rest of the CPU is the database driver's thread (aiosqlite runs SQLite there).
            out[f"{name}_main_thread_cpu_us_per_event"] = round(main / len(records) * 1e6, 1)
            out[f"{name}_statements_per_event"] = round(statements / len(records), 2)
        sa_event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", count)
        await runtime.db.dispose()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.provisioning_cost")
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--database-url", help="an empty PostgreSQL database (default: a SQLite temp file)"
    )
    parser.add_argument("--profile", type=Path, help="write DIR/<phase>.pstats (cProfile)")
    parser.add_argument("--log-level", default="INFO", help="the services' default")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    # Logs as a service writes them (JSON lines on stderr): send stderr to /dev/null.
    configure_logging("bench", level=args.log_level, json=True)
    print(json.dumps(asyncio.run(run(args.accounts, args.batch, args.database_url, args.profile))))


if __name__ == "__main__":
    main()
