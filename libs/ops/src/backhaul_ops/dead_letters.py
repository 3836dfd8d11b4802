"""Dead letters: what a consumer group gave up on, and putting it back on its topic.

The dead-letter format is the kit's (`backhaul_kit.messaging.consumer`): the original
value, key and headers, plus `dlq.*` headers saying where the message came from, which
group gave up, after how many attempts, when, and why.

A replay remembers what it republished in the committed offsets of the `backhaul-ops.replay`
group on the DLQ: every offset below the committed one was replayed, and so were the
offsets listed in the commit's metadata (those replayed one by one with `--event-id`
ahead of the rest). Consumers are idempotent by event id, so even a replay of something
already applied changes nothing; the ledger keeps operators from doing it by accident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, OffsetAndMetadata, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from backhaul_kit.kafka import create_producer
from backhaul_ops.broker import (
    cluster_metadata,
    open_admin,
    open_consumer,
    partitions_of,
    read_range,
)
from backhaul_ops.config import REPLAY_GROUP, OpsSettings
from backhaul_ops.errors import OpsError
from backhaul_ops.messages import MessageView, describe

DLQ_SUFFIX = ".dlq"
DLQ_HEADER_PREFIX = "dlq."
MAX_LEDGER_METADATA = 3000
"""Kept under the broker's offset.metadata.max.bytes (4096 by default)."""


def split_dead_letter_topic(name: str) -> tuple[str, str]:
    """`<topic>.<group>.dlq` -> (topic, group); refuses any other name."""
    stem, _, suffix = name.rpartition(".")
    topic, _, group = stem.rpartition(".")
    if f".{suffix}" != DLQ_SUFFIX or not topic or not group:
        raise OpsError(f"{name} is not a dead-letter topic (<topic>.<group>.dlq)")
    return topic, group


@dataclass(frozen=True)
class DeadLetterTopic:
    """A DLQ and how much of it is still waiting for a replay."""

    name: str
    original_topic: str
    group: str
    messages: int
    not_replayed: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.name,
            "original_topic": self.original_topic,
            "group": self.group,
            "messages": self.messages,
            "not_replayed": self.not_replayed,
        }


@dataclass(frozen=True)
class DeadLetter:
    """One message a consumer group gave up on, where it came from and why."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    replayed: bool
    message: MessageView

    @classmethod
    def from_record(cls, record: ConsumerRecord[Any, Any], *, replayed: bool) -> DeadLetter:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
            key=record.key,
            value=record.value,
            headers=tuple((name, bytes(value or b"")) for name, value in record.headers or ()),
            replayed=replayed,
            message=describe(record.value),
        )

    def header(self, name: str) -> str | None:
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None

    def _int_header(self, name: str) -> int | None:
        value = self.header(name)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    @property
    def original_topic(self) -> str | None:
        return self.header("dlq.original_topic")

    @property
    def original_partition(self) -> int | None:
        return self._int_header("dlq.original_partition")

    @property
    def original_offset(self) -> int | None:
        return self._int_header("dlq.original_offset")

    @property
    def group(self) -> str | None:
        return self.header("dlq.consumer_group")

    @property
    def attempts(self) -> int | None:
        return self._int_header("dlq.attempts")

    @property
    def failed_at(self) -> str | None:
        return self.header("dlq.failed_at")

    @property
    def error(self) -> str | None:
        return self.header("dlq.error")

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the message had before it was dead-lettered (trace context included)."""
        return [(k, v) for k, v in self.headers if not k.startswith(DLQ_HEADER_PREFIX)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dlq_topic": self.topic,
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "group": self.group,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
            "error": self.error,
            "key": self.key.decode("utf-8", errors="replace") if self.key is not None else None,
            "replayed": self.replayed,
            "message": self.message.as_dict(),
        }


@dataclass
class ReplayLedger:
    """What was replayed from one DLQ partition.

    Every offset below `next_offset` was replayed, and so was every offset in `ahead`
    (replayed one by one, ahead of an older dead letter that is still waiting).
    """

    next_offset: int
    ahead: set[int] = field(default_factory=set)

    @classmethod
    def from_commit(cls, committed: OffsetAndMetadata | None, beginning: int) -> ReplayLedger:
        if committed is None or committed.offset < 0:
            return cls(beginning)
        ahead: set[int] = set()
        if committed.metadata:
            try:
                ahead = {int(o) for o in json.loads(committed.metadata).get("replayed_ahead", [])}
            except (ValueError, TypeError, AttributeError):
                ahead = set()  # not ours: the offset alone still says what was replayed
        ledger = cls(max(committed.offset, beginning), {o for o in ahead if o >= beginning})
        ledger._advance()
        return ledger

    def replayed(self, offset: int) -> bool:
        return offset < self.next_offset or offset in self.ahead

    def not_replayed(self, end: int) -> int:
        """How many offsets below `end` are still waiting."""
        return max(end - self.next_offset, 0) - sum(1 for o in self.ahead if o < end)

    def mark(self, offset: int) -> None:
        self.ahead.add(offset)
        self._advance()

    def metadata(self) -> str:
        return json.dumps({"replayed_ahead": sorted(self.ahead)}) if self.ahead else ""

    def commit_point(self) -> OffsetAndMetadata:
        return OffsetAndMetadata(self.next_offset, self.metadata())

    def has_room_for(self, offset: int) -> bool:
        """Whether marking `offset` keeps the metadata within the broker's limit."""
        trial = ReplayLedger(self.next_offset, {*self.ahead, offset})
        trial._advance()
        return len(trial.metadata()) <= MAX_LEDGER_METADATA

    def _advance(self) -> None:
        self.ahead = {o for o in self.ahead if o >= self.next_offset}
        while self.next_offset in self.ahead:
            self.ahead.remove(self.next_offset)
            self.next_offset += 1


async def _ledgers(
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
) -> tuple[
    dict[TopicPartition, ReplayLedger], dict[TopicPartition, int], dict[TopicPartition, int]
]:
    committed = await admin.list_consumer_group_offsets(REPLAY_GROUP, partitions=partitions)
    consumer.assign(partitions)  # one metadata request for every topic, not one per topic
    beginnings = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    ledgers = {tp: ReplayLedger.from_commit(committed.get(tp), beginnings[tp]) for tp in partitions}
    return ledgers, beginnings, ends


async def list_dead_letter_topics(
    settings: OpsSettings, *, group: str | None = None
) -> list[DeadLetterTopic]:
    """Every DLQ under the configured topic prefix, with its message counts."""
    cluster = await cluster_metadata(settings)
    prefix = settings.kafka_topic_prefix
    names = sorted(
        name
        for name in cluster.topics()
        if name.startswith(prefix)
        and name.endswith(DLQ_SUFFIX)
        and (group is None or name.endswith(f".{group}{DLQ_SUFFIX}"))
    )
    if not names:
        return []
    by_topic = {name: partitions_of(cluster, name) for name in names}
    every_partition = [tp for tps in by_topic.values() for tp in tps]
    async with open_admin(settings) as admin, open_consumer(settings) as consumer:
        ledgers, beginnings, ends = await _ledgers(admin, consumer, every_partition)
    topics = []
    for name, tps in by_topic.items():
        original, dlq_group = split_dead_letter_topic(name)
        topics.append(
            DeadLetterTopic(
                name=name,
                original_topic=original,
                group=dlq_group,
                messages=sum(ends[tp] - beginnings[tp] for tp in tps),
                not_replayed=sum(ledgers[tp].not_replayed(ends[tp]) for tp in tps),
            )
        )
    return topics


async def read_dead_letters(
    settings: OpsSettings,
    dlq_topic: str,
    *,
    limit: int | None = None,
    not_replayed_only: bool = False,
) -> list[DeadLetter]:
    """The DLQ's dead letters, oldest first, each marked whether it was replayed."""
    name = settings.topic_name(dlq_topic)
    split_dead_letter_topic(name)
    partitions = partitions_of(await cluster_metadata(settings), name)
    letters: list[DeadLetter] = []
    async with open_admin(settings) as admin, open_consumer(settings) as consumer:
        ledgers, beginnings, ends = await _ledgers(admin, consumer, partitions)
        async for record in read_range(consumer, beginnings, ends):
            ledger = ledgers[TopicPartition(record.topic, record.partition)]
            letter = DeadLetter.from_record(record, replayed=ledger.replayed(record.offset))
            if not (not_replayed_only and letter.replayed):
                letters.append(letter)
    letters.sort(key=lambda d: (d.timestamp, d.partition, d.offset))
    return letters[:limit] if limit is not None else letters


ReplayAction = Literal["replayed", "would_replay", "already_replayed", "failed"]


@dataclass(frozen=True)
class ReplayOutcome:
    letter: DeadLetter
    action: ReplayAction
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "error": self.error,
            "dlq_partition": self.letter.partition,
            "dlq_offset": self.letter.offset,
            "original_topic": self.letter.original_topic,
            "event_type": self.letter.message.event_type,
            "event_id": self.letter.message.event_id,
            "subject": self.letter.message.subject,
        }


async def replay(
    settings: OpsSettings,
    dlq_topic: str,
    *,
    event_id: str | None = None,
    dry_run: bool = False,
) -> list[ReplayOutcome]:
    """Republish dead letters to their original topics, each at most once across runs.

    Without `event_id`, every dead letter not replayed yet, in order; a partition stops at
    the first one that cannot be republished, so nothing after it is marked replayed. With
    `event_id`, only that event's dead letters. The value, key and original headers go back
    unchanged through the idempotent producer; the ledger is committed after each one.
    """
    name = settings.topic_name(dlq_topic)
    split_dead_letter_topic(name)
    partitions = partitions_of(await cluster_metadata(settings), name)
    outcomes: list[ReplayOutcome] = []
    producer = None if dry_run else create_producer(settings)
    async with (
        open_admin(settings) as admin,
        open_consumer(settings, group_id=REPLAY_GROUP) as consumer,
    ):
        ledgers, beginnings, ends = await _ledgers(admin, consumer, partitions)
        starts = beginnings if event_id else {tp: ledgers[tp].next_offset for tp in partitions}
        stopped: set[TopicPartition] = set()
        if producer is not None:
            await producer.start()
        try:
            async for record in read_range(consumer, starts, ends):
                tp = TopicPartition(record.topic, record.partition)
                ledger = ledgers[tp]
                letter = DeadLetter.from_record(record, replayed=ledger.replayed(record.offset))
                if tp in stopped or (event_id and letter.message.event_id != event_id):
                    continue
                if letter.replayed:
                    if event_id:
                        outcomes.append(ReplayOutcome(letter, "already_replayed"))
                    continue
                if not letter.original_topic:
                    outcomes.append(ReplayOutcome(letter, "failed", "no dlq.original_topic header"))
                    stopped.add(tp)
                    continue
                if producer is None:
                    outcomes.append(ReplayOutcome(letter, "would_replay"))
                    continue
                if not ledger.has_room_for(record.offset):
                    outcomes.append(
                        ReplayOutcome(
                            letter,
                            "failed",
                            "too many dead letters replayed one by one ahead of older ones; "
                            "replay the whole DLQ first",
                        )
                    )
                    stopped.add(tp)
                    continue
                try:
                    await producer.send_and_wait(
                        letter.original_topic,
                        value=letter.value,
                        key=letter.key,
                        headers=letter.original_headers(),
                    )
                except KafkaError as exc:
                    outcomes.append(ReplayOutcome(letter, "failed", f"republish failed: {exc!r}"))
                    stopped.add(tp)
                    continue
                ledger.mark(record.offset)
                await consumer.commit({tp: ledger.commit_point()})
                outcomes.append(ReplayOutcome(letter, "replayed"))
        finally:
            if producer is not None:
                await producer.stop()
    return outcomes
