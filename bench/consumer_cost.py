"""CPU per event of the kit's consumer path alone: decode, inbox, handler, one emit.

`python -m bench.consumer_cost [--events 5000] [--batch 500]` runs batches of events through
`EventConsumer.process_batch` on a SQLite file with a handler that emits one event (as the
fan-out's handlers do) and another share that no handler takes (as most deliveries are), and
prints microseconds of CPU per event for each. No Kafka: it measures what the kit adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from backhaul_contracts import Envelope
from backhaul_contracts.common import StatusRef
from backhaul_contracts.events.accounts import AccountCreated, AccountStatusChanged
from backhaul_kit.db import Database
from backhaul_kit.logging import configure_logging
from backhaul_kit.messaging.consumer import EventConsumer, Record
from backhaul_kit.messaging.outbox import Outbox
from backhaul_kit.messaging.tables import messaging_metadata

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
BLOCKED = StatusRef(id=9, name="Blocked", activates_account=False)


def _record(event: object, subject: int, offset: int) -> Record:
    return Record.of_event(event, subject=subject, offset=offset, producer="bench")  # type: ignore[arg-type]


async def run(events: int, batch: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        db = Database(f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}")
        async with db.engine.begin() as connection:
            await connection.run_sync(messaging_metadata.create_all)
        consumer = EventConsumer(db, Outbox("bench"), group="bench")

        async def handle(event: AccountStatusChanged, envelope: Envelope, uow: object) -> None:
            await uow.emit(  # type: ignore[attr-defined]
                AccountCreated(
                    account_id=event.account_id,
                    name="x",
                    status=event.status,
                    account_type="Residential",
                    created_at=event.changed_at,
                ),
                subject=event.account_id,
            )

        consumer.on(AccountStatusChanged)(handle)
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        handled = [
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
            for n in range(events)
        ]
        ignored = [
            _record(
                AccountCreated(
                    account_id=n,
                    name="x",
                    status=ACTIVE,
                    account_type="Residential",
                    created_at=now,
                ),
                n,
                n,
            )
            for n in range(events)
        ]
        out: dict[str, float] = {}
        for name, records in (("handled", handled), ("ignored", ignored)):
            started = time.process_time()
            for i in range(0, len(records), batch):
                await consumer.process_batch(records[i : i + batch])
            out[f"{name}_cpu_us_per_event"] = round(
                (time.process_time() - started) / len(records) * 1e6, 1
            )
        await db.dispose()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.consumer_cost")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--log-level", default="INFO", help="the services' default")
    args = parser.parse_args()
    # Logs as a service writes them (JSON lines on stderr): send stderr to /dev/null.
    configure_logging("bench", level=args.log_level, json=True)
    print(json.dumps(asyncio.run(run(args.events, args.batch))))


if __name__ == "__main__":
    main()
