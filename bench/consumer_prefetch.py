"""Benchmark: how much memory a lagging consumer's Kafka prefetch takes.

A consumer that falls behind (accounts during a disconnect storm: its event loop serves the
storm's requests while the completion events pile up) has a backlog on every partition it
reads. aiokafka keeps one fetch response per partition in memory, up to
`max_partition_fetch_bytes` each (1 MiB by default), so the prefetch alone can hold
partitions x 1 MiB.

This starts a Kafka broker, puts `--messages` events of about 1 KB (the size of ours) on four
topics of six partitions (accounts reads three such topics and its commands), and then, in a
fresh process per setting, consumes them with the kit's subscriber arguments (FastStream,
batches of 500, manual commits) and a handler that takes 30 ms per batch, like a
transaction. It prints each process's peak resident memory and its rate.

    uv run --no-sync python -m bench.consumer_prefetch --messages 40000

Results: bench/consumer_prefetch.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from backhaul_devstack.kafka_broker import KafkaBroker, free_port

TOPICS = [f"prefetch.t{n}" for n in range(4)]
PAYLOAD = json.dumps({"event": "x" * 900}).encode()


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def produce(bootstrap: str, messages: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for n in range(messages):
            await producer.send(TOPICS[n % len(TOPICS)], PAYLOAD, key=str(n).encode())
        await producer.flush()
    finally:
        await producer.stop()


async def consume(bootstrap: str, messages: int, fetch_bytes: int | None) -> dict[str, float]:
    """One consumer group reading every topic as the kit's EventConsumer subscribes."""
    from faststream.kafka import KafkaBroker as Broker
    from faststream.middlewares import AckPolicy

    broker = Broker(bootstrap)
    seen = 0
    peak = rss_mb()
    done = asyncio.Event()
    extra = {} if fetch_bytes is None else {"max_partition_fetch_bytes": fetch_bytes}

    async def no_body(message: object) -> None:
        return None

    @broker.subscriber(  # type: ignore[misc]
        *TOPICS,
        group_id=f"prefetch-{fetch_bytes}-{time.time_ns()}",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        batch=True,
        max_records=500,
        batch_timeout_ms=20,
        decoder=no_body,
        **extra,
    )
    async def handle(body: object, message: object) -> None:
        nonlocal seen, peak
        raw = message.raw_message  # type: ignore[attr-defined]
        seen += len(raw) if isinstance(raw, tuple) else 1
        await asyncio.sleep(0.03)  # the batch's transaction
        peak = max(peak, rss_mb())
        if seen >= messages:
            done.set()

    started = time.monotonic()
    await broker.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
    finally:
        await broker.stop()
    elapsed = time.monotonic() - started
    return {"peak_rss_mb": round(peak, 1), "messages_per_s": round(seen / elapsed)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--consume", help=argparse.SUPPRESS)  # the child: bootstrap
    parser.add_argument("--fetch-bytes", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        result = asyncio.run(consume(args.consume, args.messages, args.fetch_bytes))
        print(json.dumps(result))
        return 0

    broker = KafkaBroker(port=free_port(), data_dir=Path(tempfile.mkdtemp()) / "kafka")
    broker.start()
    try:
        asyncio.run(produce(broker.bootstrap_servers, args.messages))
        print(f"{args.messages} messages of {len(PAYLOAD)} bytes on {len(TOPICS)} topics")
        for fetch_bytes in (None, 262_144, 65_536):
            child = subprocess.run(  # noqa: S603 - our interpreter, our module
                [sys.executable, "-m", "bench.consumer_prefetch", "--consume"]
                + [broker.bootstrap_servers, "--messages", str(args.messages)]
                + ([] if fetch_bytes is None else ["--fetch-bytes", str(fetch_bytes)]),
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            label = "default (1 MiB)" if fetch_bytes is None else f"{fetch_bytes // 1024} KiB"
            print(
                f"max_partition_fetch_bytes {label}: peak RSS {result['peak_rss_mb']} MB, "
                f"{result['messages_per_s']} messages/s"
            )
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
