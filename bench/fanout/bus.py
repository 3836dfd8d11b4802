"""Kafka from the outside: offsets, quiescence, the completion listener, the bus ceiling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from backhaul_contracts.topics import ALL_TOPICS

SERVICE_GROUPS = ("accounts", "billing", "scheduler", "provisioning", "notifications")


def producer_of(topic: str) -> str:
    """Which service writes a topic: `<service>.events.v1`; commands come from the scheduler."""
    return "scheduler" if ".commands." in topic else topic.split(".")[0]


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Sum over partitions of each topic's end offset (messages ever written)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    totals: dict[str, int] = defaultdict(int)
    for tp, offset in ends.items():
        totals[tp.topic] += offset
    return dict(totals)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # aiokafka has no public call
    return consumer.partitions_for_topic(topic) or set()


async def group_lag(
    bootstrap: str, groups: list[str], prefix: str = ""
) -> tuple[int, dict[str, list[str]]]:
    """Total lag of the services' groups over what they have committed, and each group's
    topics. A service's group is named `<topic prefix><service>` (the kit's consumer)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await probe.start()
    try:
        lag = 0
        subscriptions: dict[str, list[str]] = {}
        for group in groups:
            committed = await admin.list_consumer_group_offsets(f"{prefix}{group}")
            partitions = list(committed)
            subscriptions[group] = sorted({tp.topic for tp in partitions})
            if not partitions:
                continue
            ends = await probe.end_offsets(partitions)
            lag += sum(max(ends[tp] - committed[tp].offset, 0) for tp in partitions)
        return lag, subscriptions
    finally:
        await probe.stop()
        await admin.close()


async def wait_quiet(
    bootstrap: str, prefix: str, say: Any, timeout: float = 600.0, settle: float = 2.0
) -> float:
    """Until every group has consumed everything and no relay has published for `settle` s."""
    topics = [f"{prefix}{t}" for t in ALL_TOPICS]
    started = time.monotonic()
    previous: dict[str, int] | None = None
    reported = started
    while time.monotonic() - started < timeout:
        lag, _ = await group_lag(bootstrap, list(SERVICE_GROUPS), prefix)
        ends = await end_offsets(bootstrap, topics)
        if lag == 0 and ends == previous:
            return time.monotonic() - started
        previous = ends if lag == 0 else None
        if time.monotonic() - reported > 10:
            say(f"  waiting for the consumers: lag {lag}")
            reported = time.monotonic()
        await asyncio.sleep(settle)
    raise TimeoutError(f"the consumers did not catch up within {timeout:.0f} s")


@dataclass
class Listener:
    """Reads every event topic from its end, as a router or a dashboard would.

    It notes when each disconnection's completion events arrive (the final InvoiceIssued,
    AccountNetworkReleased and the first EmailSent that names it), and the size of every
    message so the bus ceiling can replay the same bytes.
    """

    bootstrap: str
    prefix: str
    arrivals: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    sizes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        partitions = []
        for topic in ALL_TOPICS:
            name = f"{self.prefix}{topic}"
            parts = consumer.partitions_for_topic(name) or await _partitions(consumer, name)
            partitions += [TopicPartition(name, p) for p in parts]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            for tp, records in batches.items():
                topic = tp.topic[len(self.prefix) :]
                for record in records:
                    size = self.sizes[topic]
                    size[0] += 1
                    size[1] += len(record.value or b"")
                    self._note(record.value, now)

    def _note(self, value: bytes | None, now: float) -> None:
        if not value or b"disconnection_id" not in value:
            return
        envelope = json.loads(value)
        kind, payload = envelope.get("event_type"), envelope.get("payload") or {}
        disconnection = payload.get("disconnection_id")
        if not disconnection:
            return
        step = {
            "InvoiceIssued": "final_invoice" if payload.get("final") else None,
            "AccountNetworkReleased": "network_release",
            "EmailSent": "email",
            "EmailRejected": "email",
        }.get(kind)
        if step:
            self.arrivals[disconnection].setdefault(step, now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def completed(self, steps: int = 3) -> dict[str, float]:
        return {d: max(s.values()) for d, s in self.arrivals.items() if len(s) >= steps}


# -- the bus ceiling ---------------------------------------------------------------------------


@dataclass
class BusPlan:
    """The messages a storm put on each topic, and who consumes which topic."""

    disconnects: int
    messages: dict[str, int]  # topic (without prefix) -> count
    average_bytes: dict[str, int]
    subscriptions: dict[str, list[str]]  # group -> topics (without prefix)
    partitions: int = 6

    def at_most(self, disconnects: int) -> BusPlan:
        """The same plan scaled down to at most `disconnects` disconnects' worth."""
        scale = min(1.0, disconnects / max(self.disconnects, 1))
        return BusPlan(
            disconnects=max(1, round(self.disconnects * scale)),
            messages={t: round(n * scale) for t, n in self.messages.items()},
            average_bytes=self.average_bytes,
            subscriptions=self.subscriptions,
            partitions=self.partitions,
        )


def _service_process(
    bootstrap: str,
    prefix: str,
    group: str,
    produce: list[tuple[str, int, int]],
    consume: list[str],
    expected: int,
    keys: int,
    commit_each: bool,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One "service" of the ceiling: produce its topics' messages, consume its subscriptions."""

    async def main() -> dict[str, float]:
        consumer = None
        if consume:
            consumer = AIOKafkaConsumer(
                *[f"{prefix}{t}" for t in consume],
                bootstrap_servers=bootstrap,
                group_id=f"{prefix}{group}",
                auto_offset_reset="earliest",
                enable_auto_commit=not commit_each,
            )
            await consumer.start()
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=2
        )
        await producer.start()
        ready.put(group)
        await asyncio.to_thread(go.wait)
        started = time.time()

        async def send_all() -> float:
            for topic, count, size in produce:
                body = (b'{"event_type":"Ceiling","payload":"' + b"x" * max(size - 40, 0)) + b'"}'
                pending = []
                for index in range(count):
                    key = str(index % keys).encode()
                    pending.append(await producer.send(f"{prefix}{topic}", body, key=key))
                    if len(pending) >= 2000:
                        await asyncio.gather(*pending)
                        pending.clear()
                await asyncio.gather(*pending)
            return time.time()

        async def receive_all() -> float:
            received = 0
            while consumer is not None and received < expected:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for records in batches.values():
                    for _ in records:
                        received += 1
                        if commit_each:  # as FastStream's manual ack does after each message
                            await consumer.commit()
            return time.time()

        produced, consumed = await asyncio.gather(send_all(), receive_all())
        await producer.stop()
        if consumer is not None:
            await consumer.stop()
        return {"started": started, "produced": produced, "consumed": consumed}

    results.put((group, asyncio.run(main())))


def bus_ceiling(
    bootstrap: str, plan: BusPlan, *, commit_each: bool = False, timeout: float = 600.0
) -> dict[str, Any]:
    """The same messages, the same topics and partitions, one process per service, no work.

    `commit_each`: the consumers commit their offset after every message, as our consumers
    do (FastStream's manual ack), instead of aiokafka's periodic auto-commit.
    """
    if not any(plan.messages.get(t) for topics in plan.subscriptions.values() for t in topics):
        raise ValueError(
            "no consumer group reads the storm's topics: the ceiling would only produce"
        )
    prefix = f"ceiling-{uuid.uuid4().hex[:6]}."

    async def create_topics() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(f"{prefix}{t}", num_partitions=plan.partitions, replication_factor=1)
                    for t in ALL_TOPICS
                ]
            )
        finally:
            await admin.close()

    asyncio.run(create_topics())
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    queues = (ready, go, results)
    processes = []
    for group in SERVICE_GROUPS:
        produce = [
            (t, n, plan.average_bytes.get(t, 600))
            for t, n in plan.messages.items()
            if producer_of(t) == group and n
        ]
        consume = [t for t in plan.subscriptions.get(group, []) if plan.messages.get(t)]
        expected = sum(plan.messages[t] for t in consume)
        process = context.Process(
            target=_service_process,
            args=(
                bootstrap,
                prefix,
                group,
                produce,
                consume,
                expected,
                plan.disconnects,
                commit_each,
                *queues,
            ),
            daemon=True,
        )
        process.start()
        processes.append(process)
    for _ in processes:
        ready.get(timeout=120)
    go.set()
    timings = dict(results.get(timeout=timeout) for _ in processes)
    for process in processes:
        process.join(timeout=30)
    started = min(t["started"] for t in timings.values())
    finished = max(max(t["produced"], t["consumed"]) for t in timings.values())
    seconds = finished - started
    total = sum(plan.messages.values())
    deliveries = sum(
        plan.messages[t]
        for topics in plan.subscriptions.values()
        for t in topics
        if t in plan.messages
    )
    return {
        "messages_produced": total,
        "messages_delivered": deliveries,
        "seconds": round(seconds, 3),
        "disconnects_per_s": round(plan.disconnects / seconds, 1),
        "messages_per_s": round(total / seconds, 1),
        "commit": "after every message" if commit_each else "aiokafka auto-commit (every 5 s)",
        "note": "aiokafka, idempotent acks=all producers (linger 2 ms), one consumer group per "
        "service, one OS process per service; nothing decoded, nothing stored",
        "cpu_count": os.cpu_count(),
    }
