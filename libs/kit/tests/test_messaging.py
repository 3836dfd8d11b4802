"""The delivery rules of docs/architecture.md ("Delivery rules"), on a real database and a
real Kafka broker."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, insert, select

from backhaul_contracts import Envelope
from backhaul_contracts.common import StatusRef
from backhaul_contracts.events.accounts import AccountCreated, AccountStatusChanged
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.kafka import create_broker
from backhaul_kit.messaging.consumer import EventConsumer, Outcome, Record
from backhaul_kit.messaging.outbox import Outbox
from backhaul_kit.messaging.relay import OutboxRelay
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.testing import eventually
from backhaul_kit.unit_of_work import UnitOfWork

from .conftest import effects

pytestmark = pytest.mark.integration

A, B = (
    StatusRef(id=1, name="Lead", activates_account=False),
    StatusRef(id=2, name="Active", activates_account=True),
)


def _changed(account_id: int, to: StatusRef = B) -> AccountStatusChanged:
    return AccountStatusChanged(
        account_id=account_id,
        previous_status=A,
        status=to,
        changed_by="test",
        changed_at=datetime.now(UTC),
    )


async def _read(settings, topic: str, count: int, timeout: float = 15.0):
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < count and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records += batch
    finally:
        await consumer.stop()
    return records


async def test_relay_publishes_only_what_committed_in_order(db, settings, producer):
    outbox = Outbox("kit-test", topic_prefix=settings.kafka_topic_prefix)
    for account_id in (1, 2, 3):
        async with UnitOfWork(db, outbox) as uow:
            await uow.emit(_changed(account_id), subject=account_id)
    with pytest.raises(RuntimeError):
        async with UnitOfWork(db, outbox) as uow:
            await uow.emit(_changed(99), subject=99)
            raise RuntimeError("the change failed: its event must never leave")

    relay = OutboxRelay(db, outbox, producer)
    assert await relay.publish_batch() == 3
    assert await relay.publish_batch() == 0  # marked published: nothing resent

    records = await _read(settings, ACCOUNTS_EVENTS, 3)
    subjects = [Envelope.model_validate_json(r.value).subject for r in records]
    assert subjects == ["1", "2", "3"]
    assert all(r.key == s.encode() for r, s in zip(records, subjects, strict=True))
    assert {h[0] for h in records[0].headers} >= {"event_type", "event_id"}


async def test_an_event_left_unpublished_by_a_crash_is_published_later(db, settings, producer):
    outbox = Outbox("kit-test", topic_prefix=settings.kafka_topic_prefix)
    async with UnitOfWork(db, outbox) as uow:
        await uow.emit(_changed(7), subject=7)
    # The process "died" before its relay ran: a new relay finds the row and sends it.
    relay = OutboxRelay(db, outbox, producer)
    task = asyncio.create_task(relay.run())
    try:

        async def sent():
            async with db.transaction() as session:
                pending = await session.scalar(
                    select(func.count())
                    .select_from(outbox_messages)
                    .where(outbox_messages.c.published_at.is_(None))
                )
            assert pending == 0

        await eventually(sent)
    finally:
        task.cancel()
    assert len(await _read(settings, ACCOUNTS_EVENTS, 1)) == 1


async def test_an_idle_relay_is_woken_by_a_commit_in_its_own_process_or_through_notify(
    db, settings, producer
):
    """The relay's look-again is 30 s here: only a wake-up can publish within the deadline.
    SQLite has one process per file, so it is woken in-process; PostgreSQL also by NOTIFY
    from a process (here: an outbox object) whose relay runs elsewhere, as the API role's."""
    relay_outbox = Outbox("kit-test", topic_prefix=settings.kafka_topic_prefix)
    relay = OutboxRelay(db, relay_outbox, producer, poll_interval=30.0, idle_poll=30.0)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.5)  # the first (empty) look is behind it
        if db.is_sqlite:
            writer = relay_outbox
        else:
            writer = Outbox("kit-test", topic_prefix=settings.kafka_topic_prefix)
            writer.notify_other_processes = True
        async with UnitOfWork(db, writer) as uow:
            await uow.emit(_changed(11), subject=11)

        async def published() -> None:
            assert relay.published == 1

        await eventually(published, timeout=10.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _consumer(db, settings, producer, attempts: int = 3) -> EventConsumer:
    outbox = Outbox("kit-test", topic_prefix=settings.kafka_topic_prefix)
    consumer = EventConsumer(
        db,
        outbox,
        group="kit-test",
        max_attempts=attempts,
        retry_backoff=0.01,
        topic_prefix=settings.kafka_topic_prefix,
    )
    consumer.dead_letters = producer
    return consumer


TOPIC = "accounts.events.v1"


def _record(event, subject: int, offset: int = 0, topic: str = TOPIC) -> Record:
    envelope = Envelope.wrap(event, producer="test", subject=subject)
    return Record(topic=topic, value=envelope.to_bytes(), key=str(subject).encode(), offset=offset)


async def _effects(db) -> list[tuple[int, str]]:
    async with db.transaction() as session:
        return [
            tuple(r)
            for r in (
                await session.execute(
                    select(effects.c.account_id, effects.c.status).order_by(effects.c.id)
                )
            ).all()
        ]


async def test_a_duplicate_changes_nothing(db, settings, producer):
    consumer = _consumer(db, settings, producer)

    @consumer.on(AccountStatusChanged)
    async def apply(event, envelope, uow):
        await uow.session.execute(
            insert(effects).values(account_id=event.account_id, status=event.status.name)
        )

    record = _record(_changed(1), 1)
    assert await consumer.process(record) is Outcome.HANDLED
    assert await consumer.process(record) is Outcome.DUPLICATE
    assert await _effects(db) == [(1, "Active")]


async def test_a_transient_failure_is_retried_and_applied_once(db, settings, producer):
    consumer = _consumer(db, settings, producer, attempts=3)
    calls = 0

    @consumer.on(AccountStatusChanged)
    async def flaky(event, envelope, uow):
        nonlocal calls
        calls += 1
        await uow.session.execute(
            insert(effects).values(account_id=event.account_id, status=event.status.name)
        )
        if calls < 3:
            raise ConnectionError("database went away")  # rolls back the insert and the inbox row

    assert await consumer.process(_record(_changed(5), 5)) is Outcome.HANDLED
    assert calls == 3
    assert await _effects(db) == [(5, "Active")]


async def test_a_message_that_keeps_failing_goes_to_the_dlq_and_the_next_one_flows(
    db, settings, producer
):
    consumer = _consumer(db, settings, producer, attempts=2)

    @consumer.on(AccountStatusChanged)
    async def apply(event, envelope, uow):
        if event.account_id == 13:
            raise ValueError("account 13 is cursed")
        await uow.session.execute(
            insert(effects).values(account_id=event.account_id, status=event.status.name)
        )

    topic = settings.topic(TOPIC)
    assert await consumer.process(_record(_changed(13), 13, 7, topic)) is Outcome.DEAD_LETTERED
    assert await consumer.process(_record(_changed(14), 14, 8, topic)) is Outcome.HANDLED
    garbage = Record(topic=topic, value=b"{garbage", offset=9)
    assert await consumer.process(garbage) is Outcome.DEAD_LETTERED
    assert await _effects(db) == [(14, "Active")]

    records = await _read_topic(settings.kafka_bootstrap_servers, f"{topic}.kit-test.dlq", 2)
    first = dict(records[0].headers)
    assert first["dlq.error"].decode() == "ValueError: account 13 is cursed"
    assert first["dlq.original_offset"] == b"7"
    assert first["dlq.attempts"] == b"2"
    assert Envelope.model_validate_json(records[0].value).subject == "13"  # the original, as it was
    assert b"not a valid envelope" in dict(records[1].headers)["dlq.error"]


async def _read_topic(bootstrap: str, topic: str, count: int):
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out = []
    try:
        for _ in range(75):
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                out += batch
            if len(out) >= count:
                break
    finally:
        await consumer.stop()
    assert len(out) >= count
    return out


async def test_consumer_through_kafka_commits_after_the_effect(db, settings, producer):
    """Subscribed through FastStream: every event is applied once, in order per account."""
    consumer = _consumer(db, settings, producer)

    @consumer.on(AccountStatusChanged)
    async def apply(event, envelope, uow):
        await uow.session.execute(
            insert(effects).values(account_id=event.account_id, status=event.status.name)
        )

    broker = create_broker(settings)
    consumer.subscribe(broker)
    await broker.start()
    try:
        topic = settings.topic(ACCOUNTS_EVENTS)
        for n, status in enumerate(["Active", "Lead", "Active"]):
            event = _changed(42, StatusRef(id=n, name=status, activates_account=True))
            envelope = Envelope.wrap(event, producer="test", subject=42)
            await producer.send_and_wait(topic, envelope.to_bytes(), key=b"42")
            if n == 0:  # the same event delivered twice
                await producer.send_and_wait(topic, envelope.to_bytes(), key=b"42")

        async def all_applied():
            assert await _effects(db) == [(42, "Active"), (42, "Lead"), (42, "Active")]

        await eventually(all_applied)
    finally:
        await broker.stop()


async def test_metrics_count_outcomes_and_dead_letters(db, settings, producer):
    from prometheus_client import REGISTRY

    consumer = _consumer(db, settings, producer, attempts=1)

    @consumer.on(AccountStatusChanged)
    async def refuse(event, envelope, uow):
        raise ValueError("no")

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = value(
        "backhaul_events_total",
        service="kit-test",
        event_type="AccountStatusChanged",
        outcome="dead_lettered",
    )
    await consumer.process(_record(_changed(3), 3, topic=settings.topic(TOPIC)))
    after = value(
        "backhaul_events_total",
        service="kit-test",
        event_type="AccountStatusChanged",
        outcome="dead_lettered",
    )
    assert after == before + 1
    assert (
        value("backhaul_dead_letters_total", service="kit-test", topic=settings.topic(TOPIC)) >= 1
    )


async def test_a_batch_is_applied_in_one_transaction_in_order_with_its_duplicates_skipped(
    db, settings, producer
):
    consumer = _consumer(db, settings, producer)

    @consumer.on(AccountStatusChanged)
    async def apply(event, envelope, uow):
        await uow.session.execute(
            insert(effects).values(account_id=event.account_id, status=event.status.name)
        )

    first = _record(_changed(20), 20, 0)
    batch = [first, _record(_changed(21), 21, 1), first, _record(_changed(22, A), 22, 2)]
    created = AccountCreated(account_id=23, name="n", status=B, created_at=datetime.now(UTC))

    outcomes = await consumer.process_batch([*batch, _record(created, 23, 3)])

    assert outcomes == [
        Outcome.HANDLED,
        Outcome.HANDLED,
        Outcome.DUPLICATE,
        Outcome.HANDLED,
        Outcome.IGNORED,
    ]
    assert await _effects(db) == [(20, "Active"), (21, "Active"), (22, "Lead")]
    assert await consumer.process_batch(batch) == [Outcome.DUPLICATE] * 4


async def test_when_one_message_of_a_batch_fails_the_rest_apply_once_and_it_is_dead_lettered(
    db, settings, producer
):
    """Message k fails and k+1 succeeds: k is dead-lettered, never skipped, and the batch's
    other effects, rolled back with the failed batch, are applied exactly once."""
    consumer = _consumer(db, settings, producer, attempts=2)
    calls: list[int] = []

    @consumer.on(AccountStatusChanged)
    async def apply(event, envelope, uow):
        calls.append(event.account_id)
        await uow.session.execute(
            insert(effects).values(account_id=event.account_id, status=event.status.name)
        )
        if event.account_id == 31:
            raise ValueError("account 31 is cursed")

    topic = settings.topic(TOPIC)
    batch = [_record(_changed(n), n, n, topic) for n in (30, 31, 32)]

    outcomes = await consumer.process_batch(batch)

    assert outcomes == [Outcome.HANDLED, Outcome.DEAD_LETTERED, Outcome.HANDLED]
    assert await _effects(db) == [(30, "Active"), (32, "Active")]
    # Together (30, 31 fails), then one at a time: 30, 31 twice, 32.
    assert calls == [30, 31, 30, 31, 31, 32]
    [dead] = await _read_topic(settings.kafka_bootstrap_servers, f"{topic}.kit-test.dlq", 1)
    assert dict(dead.headers)["dlq.original_offset"] == b"31"


async def test_a_backlog_is_consumed_in_batches_through_kafka(db, settings, producer):
    """What piled up while the consumer was away comes in a few polls, not one per message."""
    from prometheus_client import REGISTRY

    consumer = _consumer(db, settings, producer)
    consumer.service = "kit-batch-test"

    @consumer.on(AccountStatusChanged)
    async def apply(event, envelope, uow):
        await uow.session.execute(
            insert(effects).values(account_id=event.account_id, status=event.status.name)
        )

    topic = settings.topic(ACCOUNTS_EVENTS)
    for n in range(200):
        envelope = Envelope.wrap(_changed(1000 + n), producer="test", subject=1000 + n)
        await producer.send(topic, envelope.to_bytes(), key=b"same-partition")
    await producer.flush()

    broker = create_broker(settings)
    consumer.subscribe(broker)
    await broker.start()
    try:

        async def all_applied():
            assert await _effects(db) == [(1000 + n, "Active") for n in range(200)]

        await eventually(all_applied)
    finally:
        await broker.stop()

    labels = {"service": "kit-batch-test"}
    batches = REGISTRY.get_sample_value("backhaul_consumer_batch_size_count", labels)
    handled = REGISTRY.get_sample_value("backhaul_consumer_batch_size_sum", labels)
    assert batches and handled
    assert handled / batches > 10, (batches, handled)


@pytest.mark.postgres
async def test_a_database_outage_dead_letters_nothing_and_holds_the_partition(settings, producer):
    """PostgreSQL stopped under a consumer with two attempts and a 10 ms backoff (it would
    dead-letter within milliseconds if an outage counted): it waits, applies nothing until
    the database is back, then applies each event once, in order, with no dead letter."""
    from backhaul_devstack.postgres import PostgresCluster
    from backhaul_kit.db import Database
    from backhaul_kit.messaging.tables import messaging_metadata

    from .conftest import effects_metadata

    cluster = PostgresCluster()
    await asyncio.to_thread(cluster.start)
    db = None
    try:
        db = Database(await asyncio.to_thread(cluster.create_database, "outage"))
        async with db.engine.begin() as connection:
            await connection.run_sync(messaging_metadata.create_all)
            await connection.run_sync(effects_metadata.create_all)
        consumer = _consumer(db, settings, producer, attempts=2)
        consumer.database_retry_max_seconds = 0.5

        @consumer.on(AccountStatusChanged)
        async def apply(event, envelope, uow):
            await uow.session.execute(
                insert(effects).values(account_id=event.account_id, status=event.status.name)
            )

        topic = settings.topic(TOPIC)
        records = [_record(_changed(n), n, n, topic) for n in (60, 61, 62, 63)]
        assert await consumer.process_batch(records[:1]) == [Outcome.HANDLED]

        await asyncio.to_thread(cluster.stop, "fast")
        batch = asyncio.create_task(consumer.process_batch(records[1:3]))
        single = asyncio.create_task(consumer.process(records[3]))
        await asyncio.sleep(3)  # a hundred times what two attempts take
        assert not batch.done() and not single.done(), "gave up on events while the db was down"

        await asyncio.to_thread(cluster.start)
        assert await asyncio.wait_for(batch, 60) == [Outcome.HANDLED, Outcome.HANDLED]
        assert await asyncio.wait_for(single, 60) is Outcome.HANDLED
        effects_now = await _effects(db)
        assert sorted(effects_now) == [(n, "Active") for n in (60, 61, 62, 63)]  # each once
        assert effects_now.index((61, "Active")) < effects_now.index((62, "Active"))  # in order
        assert await consumer.process_batch(records) == [Outcome.DUPLICATE] * 4
    finally:
        if db is not None:
            await db.dispose()
        await asyncio.to_thread(cluster.destroy)


async def test_a_failing_handler_still_dead_letters_while_the_database_answers(
    db, settings, producer
):
    """The outage rule does not turn a poison message into an endless retry: the database
    answers, so each failure counts and the message goes to the DLQ after max_attempts."""
    consumer = _consumer(db, settings, producer, attempts=3)
    calls = 0

    @consumer.on(AccountStatusChanged)
    async def broken(event, envelope, uow):
        nonlocal calls
        calls += 1
        from sqlalchemy import text

        await uow.session.execute(text("SELECT * FROM no_such_table"))  # a database error

    outcome = await consumer.process(_record(_changed(70), 70, topic=settings.topic(TOPIC)))
    assert outcome is Outcome.DEAD_LETTERED
    assert calls == 3


def test_a_second_handler_for_one_event_type_is_refused_at_registration(db):
    consumer = EventConsumer(db, Outbox("test"), group="twice")

    async def first(event, envelope, uow) -> None:
        return None

    async def second(event, envelope, uow) -> None:
        return None

    consumer.on(AccountCreated)(first)
    consumer.on(AccountCreated)(first)  # the same handler again is harmless
    with pytest.raises(ValueError, match="already handles AccountCreated"):
        consumer.on(AccountCreated)(second)
