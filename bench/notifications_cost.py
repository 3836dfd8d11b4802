"""CPU per disconnect of the notifications service: queueing its email, then sending it.

`python -m bench.notifications_cost [--events 2000] [--batch 500]` bootstraps notifications
on a SQLite file (migrated, so with the shipped triggers), seeds one account with a primary
contact per event through the consumer (AccountCreated), then

(a) feeds N AccountDisconnected events (with their `event_type` header, as the relay sends
    them) through `runtime.consumer.process_batch` in batches, and reports microseconds of
    CPU per event (each queues one email through the shipped "Account disconnected" trigger);
(b) runs the service's dispatcher (its own policy: batch size, lanes) against a real SMTP
    sink until every queued email is sent, and reports microseconds of CPU per email.

The sink runs in a child process so that its CPU is not counted: `time.process_time`
counts every thread of this process, which includes aiosqlite's (a real cost of the
service) but would include an in-process sink's too. No Kafka. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from uuid import uuid4

from sqlalchemy import func, select

from backhaul_contracts import Event
from backhaul_contracts.common import ContactRef, StatusRef
from backhaul_contracts.events.accounts import AccountCreated, AccountDisconnected
from backhaul_kit.logging import configure_logging
from backhaul_kit.messaging.consumer import Outcome, Record
from notifications.adapters.tables import Email
from notifications.bootstrap import bootstrap
from notifications.config import NotificationsSettings

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
INACTIVE = StatusRef(id=3, name="Inactive", activates_account=False)


def _sink(directory: str, ports: Connection) -> None:
    """The child process: a MailSink on free ports until the parent closes the pipe."""
    from backhaul_devstack.smtp_sink import MailSink

    sink = MailSink.on_free_ports(Path(directory))
    ports.send(sink.controller.port)
    try:
        ports.recv()  # EOF when the parent is done
    except EOFError:
        pass
    finally:
        sink.stop()


def _record(event: Event, subject: int, offset: int) -> Record:
    return Record.of_event(event, subject=subject, offset=offset, producer="accounts")


def _contact(account_id: int) -> ContactRef:
    return ContactRef(
        contact_id=account_id * 10,
        name=f"Contact {account_id}",
        email=f"c{account_id}@example.com",
        is_primary=True,
        message_categories=[],
    )


async def _feed(runtime: object, records: list[Record], batch: int) -> float:
    """CPU seconds to run `records` through the consumer, `batch` at a time."""
    consumer = runtime.consumer  # type: ignore[attr-defined]
    started = time.process_time()
    for i in range(0, len(records), batch):
        outcomes = await consumer.process_batch(records[i : i + batch])
        assert all(o is Outcome.HANDLED for o in outcomes), outcomes
    return time.process_time() - started


def _settings(smtp_port: int, scratch: Path) -> NotificationsSettings:
    return NotificationsSettings(
        database_url=f"sqlite+aiosqlite:///{scratch / 'notifications.db'}",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
    )


async def run(events: int, batch: int, settings: NotificationsSettings) -> dict[str, object]:
    runtime = bootstrap(settings)
    now = datetime.now(UTC)
    ids = range(1, events + 1)
    created = [
        _record(
            AccountCreated(
                account_id=n,
                name=f"Account {n}",
                status=ACTIVE,
                primary_contact=_contact(n),
                created_at=now,
            ),
            n,
            n,
        )
        for n in ids
    ]
    seed_cpu = await _feed(runtime, created, batch)
    disconnected = [
        _record(
            AccountDisconnected(
                account_id=n,
                account_name=f"Account {n}",
                disconnection_id=uuid4(),
                disconnected_at=now,
                disconnected_by="bench",
                previous_status=ACTIVE,
                status=INACTIVE,
                primary_contact=_contact(n),
            ),
            n,
            events + n,
        )
        for n in ids
    ]
    queue_cpu = await _feed(runtime, disconnected, batch)
    async with runtime.db.transaction() as session:
        queued = await session.scalar(select(func.count()).select_from(Email))
    assert queued == events, queued

    dispatcher = runtime.dispatcher
    started_wall, started = time.perf_counter(), time.process_time()
    sent = 0
    while attempted := await dispatcher.deliver_due():
        sent += attempted
    send_cpu = time.process_time() - started
    send_wall = time.perf_counter() - started_wall
    async with runtime.db.transaction() as session:
        states = dict(
            (await session.execute(select(Email.state, func.count()).group_by(Email.state))).all()
        )
    assert states == {"sent": events}, states
    await runtime.db.dispose()
    return {
        "events": events,
        "batch": batch,
        "emails": sent,
        "seed_account_created_cpu_us_per_event": round(seed_cpu / events * 1e6, 1),
        "disconnect_cpu_us_per_event": round(queue_cpu / events * 1e6, 1),
        "dispatch_cpu_us_per_email": round(send_cpu / sent * 1e6, 1),
        "dispatch_wall_ms_per_email": round(send_wall / sent * 1e3, 2),
        "lanes": dispatcher.policy.concurrency,
        "round_size": dispatcher.policy.batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notifications_cost")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--log-level", default="INFO", help="the services' default")
    args = parser.parse_args()
    # Logs as a service writes them (JSON lines on stderr): send stderr to /dev/null.
    configure_logging("notifications", level=args.log_level, json=True)
    with tempfile.TemporaryDirectory() as scratch:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        sink = context.Process(target=_sink, args=(str(Path(scratch) / "mail"), theirs))
        sink.start()
        theirs.close()
        try:
            settings = _settings(ours.recv(), Path(scratch))
            bootstrap(settings).migrate()  # runs its own event loop
            result = asyncio.run(run(args.events, args.batch, settings))
        finally:
            ours.close()
            sink.join(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
