"""Fixtures of the operator CLI's tests: a real broker, a fresh topic prefix per test.

The CLI runs its own event loop (asyncio.run), so the tests that invoke it are plain
functions and set up Kafka with asyncio.run as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from typer.testing import CliRunner

from backhaul_contracts import Envelope
from backhaul_contracts.common import StatusRef
from backhaul_contracts.events.accounts import AccountStatusChanged
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.kafka import client_options, create_producer, ensure_topics
from backhaul_kit.messaging.consumer import EventConsumer, Record
from backhaul_ops.cli import app
from backhaul_ops.config import OpsSettings

GROUP = "billing"
DLQ = f"{ACCOUNTS_EVENTS}.{GROUP}.dlq"


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> OpsSettings:
    settings = OpsSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        kafka_topic_partitions=2,
    )
    asyncio.run(ensure_topics(settings, [ACCOUNTS_EVENTS], [GROUP]))
    return settings


@pytest.fixture
def ops(settings: OpsSettings) -> Callable[..., Any]:
    """Run `backhaul-ops ARGS...` against the test's broker and topic prefix."""
    runner = CliRunner(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        }
    )

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args))

    return invoke


def status_changed(account_id: int) -> Envelope:
    return Envelope.wrap(
        AccountStatusChanged(
            account_id=account_id,
            previous_status=StatusRef(id=1, name="Lead", activates_account=False),
            status=StatusRef(id=2, name="Active", activates_account=True),
            changed_by="test",
            changed_at=datetime.now(UTC),
        ),
        producer="accounts",
        subject=account_id,
    )


async def _with_producer(settings: OpsSettings, work: Callable[[AIOKafkaProducer], Any]) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        await work(producer)
    finally:
        await producer.stop()


@pytest.fixture
def dead_letter(settings: OpsSettings) -> Callable[..., None]:
    """Put a message on the DLQ exactly as a consumer group gives up on it: through the
    kit's own dead-letter path, so the test follows the real format."""

    def put(
        value: bytes,
        *,
        key: bytes | None = None,
        error: Exception | None = None,
        offset: int = 42,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        async def work(producer: AIOKafkaProducer) -> None:
            consumer = EventConsumer(
                None,  # type: ignore[arg-type]  # the dead-letter path touches no database
                None,  # type: ignore[arg-type]
                group=GROUP,
                topic_prefix=settings.kafka_topic_prefix,
            )
            consumer.dead_letters = producer
            record = Record(
                topic=settings.topic(ACCOUNTS_EVENTS),
                value=value,
                key=key,
                partition=1,
                offset=offset,
                headers=headers,
            )
            await consumer._dead_letter(record, error or ValueError("boom"), attempts=5)

        asyncio.run(_with_producer(settings, work))

    return put


@pytest.fixture
def publish(settings: OpsSettings) -> Callable[..., None]:
    """Publish raw messages on a topic (before its prefix)."""

    def put(topic: str, *messages: tuple[bytes | None, bytes]) -> None:
        async def work(producer: AIOKafkaProducer) -> None:
            for key, value in messages:
                await producer.send_and_wait(settings.topic(topic), value=value, key=key)

        asyncio.run(_with_producer(settings, work))

    return put


@pytest.fixture
def read_topic(settings: OpsSettings) -> Callable[[str], list[Any]]:
    """Every record on a topic (before its prefix) now."""

    def read(topic: str) -> list[Any]:
        async def work() -> list[Any]:
            consumer = AIOKafkaConsumer(
                auto_offset_reset="earliest", enable_auto_commit=False, **client_options(settings)
            )
            await consumer.start()
            try:
                partitions = [
                    TopicPartition(settings.topic(topic), p)
                    for p in range(settings.kafka_topic_partitions)
                ]
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                expected = sum((await consumer.end_offsets(partitions)).values())
                records: list[Any] = []
                deadline = asyncio.get_running_loop().time() + 15
                while len(records) < expected:
                    if asyncio.get_running_loop().time() > deadline:
                        raise AssertionError(f"read {len(records)} of {expected} records")
                    for batch in (await consumer.getmany(timeout_ms=200)).values():
                        records += batch
                return records
            finally:
                await consumer.stop()

        return asyncio.run(work())

    return read
