"""Following a topic: each message decoded with the contracts, as it arrives."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from backhaul_ops.broker import cluster_metadata, open_consumer, partitions_of
from backhaul_ops.config import OpsSettings
from backhaul_ops.messages import MessageView, describe


@dataclass(frozen=True)
class TopicMessage:
    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: str | None
    message: MessageView

    def about(self, account_id: str) -> bool:
        """Whether the message concerns the account (its subject, else its key)."""
        if self.message.subject is not None:
            return self.message.subject == account_id
        return self.key == account_id

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat(),
            "key": self.key,
            **self.message.as_dict(),
        }


async def tail(
    settings: OpsSettings,
    topic: str,
    *,
    from_beginning: bool = False,
    follow: bool = True,
    account_id: str | None = None,
    limit: int | None = None,
    idle_timeout: float | None = None,
) -> AsyncIterator[TopicMessage]:
    """Messages of every partition of the topic, in order within a partition.

    From the end (new messages only) unless `from_beginning`. With `follow` it waits for
    new messages until `limit` are shown or `idle_timeout` seconds pass without one;
    without it, it stops at the end the topic had when it started.
    """
    name = settings.topic_name(topic)
    partitions = partitions_of(await cluster_metadata(settings), name)
    shown = 0
    if limit is not None and limit <= 0:
        return
    async with open_consumer(settings) as consumer:
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        ends = None if follow else await consumer.end_offsets(partitions)
        pending: set[TopicPartition] = set(partitions)
        last_seen = time.monotonic()
        while True:
            if ends is not None:
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if not pending:
                    return
            batch = await consumer.getmany(*pending, timeout_ms=500)
            if batch:
                last_seen = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - last_seen > idle_timeout:
                return
            records = [r for records in batch.values() for r in records]
            records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
            for record in records:
                if (
                    ends is not None
                    and record.offset >= ends[TopicPartition(name, record.partition)]
                ):
                    continue
                item = TopicMessage(
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
                    key=record.key.decode("utf-8", errors="replace") if record.key else None,
                    message=describe(record.value),
                )
                if account_id is not None and not item.about(account_id):
                    continue
                yield item
                shown += 1
                if limit is not None and shown >= limit:
                    return
