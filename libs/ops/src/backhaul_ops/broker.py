"""Kafka clients for the operator, built from the same settings the services use."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.cluster import ClusterMetadata

from backhaul_kit.kafka import client_options
from backhaul_ops.config import OpsSettings
from backhaul_ops.errors import OpsError, TopicNotFound

CLIENT_ID = "backhaul-ops"


@asynccontextmanager
async def open_consumer(
    settings: OpsSettings, *, group_id: str | None = None
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer that never commits by itself; with a group only to commit by hand."""
    consumer = AIOKafkaConsumer(
        client_id=CLIENT_ID,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **client_options(settings),
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


@asynccontextmanager
async def open_admin(settings: OpsSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(client_id=CLIENT_ID, **client_options(settings))
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def cluster_metadata(settings: OpsSettings) -> ClusterMetadata:
    """Every topic and its partitions, as the broker sees them now."""
    client = AIOKafkaClient(client_id=CLIENT_ID, **client_options(settings))
    try:
        await client.bootstrap()
        return await client.fetch_all_metadata()
    finally:
        await client.close()


def partitions_of(cluster: ClusterMetadata, topic: str) -> list[TopicPartition]:
    """The topic's partitions; raises TopicNotFound rather than waiting for it to appear."""
    partitions = cluster.partitions_for_topic(topic)
    if not partitions:
        raise TopicNotFound(topic)
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def read_range(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    *,
    idle_timeout: float = 15.0,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record from each partition's start offset up to (not including) its end.

    Records come in offset order within a partition. Offsets already deleted by retention
    are skipped (the consumer resets to the earliest one left).
    """
    pending = {tp for tp, start in starts.items() if start < ends[tp]}
    if not pending:
        return
    consumer.assign(sorted(pending))
    for tp in pending:
        consumer.seek(tp, starts[tp])
    deadline = time.monotonic() + idle_timeout
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500)
        if batch:
            deadline = time.monotonic() + idle_timeout
        elif time.monotonic() > deadline:
            raise OpsError(f"no records arrived for {idle_timeout:.0f}s while reading {pending}")
        for tp, records in batch.items():
            for record in records:
                if record.offset < ends[tp]:
                    yield record
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
