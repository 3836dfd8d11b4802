"""The operator's story: a consumer gives up on an event, the cause is fixed, the operator
replays it, the consumer applies it once, and a second replay changes nothing."""

from __future__ import annotations

import asyncio

from backhaul_contracts import Envelope
from backhaul_contracts.events.accounts import AccountStatusChanged
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.db import Database
from backhaul_kit.kafka import create_producer
from backhaul_kit.messaging.consumer import EventConsumer, Outcome, Record
from backhaul_kit.messaging.outbox import Outbox
from backhaul_kit.messaging.tables import messaging_metadata

from .conftest import DLQ, GROUP, status_changed


def _consumer(db: Database, settings, applied: list[int], *, broken: bool) -> EventConsumer:
    consumer = EventConsumer(
        db,
        Outbox("ops-test", topic_prefix=settings.kafka_topic_prefix),
        group=GROUP,
        max_attempts=2,
        retry_backoff=0.01,
        topic_prefix=settings.kafka_topic_prefix,
    )

    @consumer.on(AccountStatusChanged)
    async def apply(event: AccountStatusChanged, envelope: Envelope, uow) -> None:
        if broken:
            raise RuntimeError("billing plan table is missing")
        applied.append(event.account_id)

    return consumer


def test_a_dead_letter_replayed_after_the_fix_is_applied_once(tmp_path, settings, ops, read_topic):
    url = f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}"
    envelope = status_changed(7)
    applied: list[int] = []

    async def give_up() -> Outcome:
        db = Database(url)
        async with db.engine.begin() as connection:
            await connection.run_sync(messaging_metadata.create_all)
        producer = create_producer(settings)
        await producer.start()
        try:
            consumer = _consumer(db, settings, applied, broken=True)
            consumer.dead_letters = producer
            record = Record(
                topic=settings.topic(ACCOUNTS_EVENTS),
                value=envelope.to_bytes(),
                key=b"7",
                offset=3,
            )
            return await consumer.process(record)
        finally:
            await producer.stop()
            await db.dispose()

    async def consume_fixed(records: list) -> list[Outcome]:
        db = Database(url)
        try:
            consumer = _consumer(db, settings, applied, broken=False)
            return [
                await consumer.process(
                    Record(topic=r.topic, value=r.value, key=r.key, offset=r.offset)
                )
                for r in records
            ]
        finally:
            await db.dispose()

    assert asyncio.run(give_up()) is Outcome.DEAD_LETTERED
    assert "RuntimeError: billing plan table is missing" in ops("dlq", "show", DLQ).output

    assert "replayed 1, failed 0" in ops("dlq", "replay", DLQ).output
    replayed = read_topic(ACCOUNTS_EVENTS)
    assert asyncio.run(consume_fixed(replayed)) == [Outcome.HANDLED]

    assert "replayed 0, failed 0" in ops("dlq", "replay", DLQ).output
    assert len(read_topic(ACCOUNTS_EVENTS)) == 1
    # Even a replay that did get through twice would change nothing: the inbox has it.
    assert asyncio.run(consume_fixed(replayed)) == [Outcome.DUPLICATE]
    assert applied == [7]
