"""The whole system as separate OS processes on a real Kafka broker."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backhaul_devstack.kafka_broker import free_port
from backhaul_devstack.otlp_receiver import OtlpReceiver
from backhaul_devstack.stack import SERVICES, Stack


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(free_port())
    receiver.start()
    yield receiver
    receiver.stop()


def _running_stack(kafka_bootstrap: str, otlp: OtlpReceiver | None) -> Iterator[Stack]:
    """Kafka plus the mail sink and the five services, each its own process, on free ports."""
    root = Path(tempfile.mkdtemp(prefix="backhaul-e2e-"))
    stack = Stack(
        root=root,
        kafka_bootstrap=kafka_bootstrap,
        ports={name: free_port() for name in SERVICES},
        smtp_port=free_port(),
        mail_http_port=free_port(),
        topic_prefix=f"e2e{uuid.uuid4().hex[:8]}.",
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint if otlp else "",
            "SCHEDULER_POLL_INTERVAL_SECONDS": "0.1",
        },
    )
    try:
        stack.start(timeout=120)
        yield stack
    except BaseException:
        for name in stack.services:
            log = root / "logs" / f"{name}.log"
            if log.exists():
                tail = "\n".join(log.read_text().splitlines()[-40:])
                print(f"--- {name} log (tail) ---\n{tail}")
        raise
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def stack(kafka_bootstrap: str, otlp: OtlpReceiver) -> Iterator[Stack]:
    """The system the end-to-end tests drive."""
    yield from _running_stack(kafka_bootstrap, otlp)


@pytest.fixture(scope="module")
def fuzz_stack(kafka_bootstrap: str) -> Iterator[Stack]:
    """A system of its own for the fuzzer, which edits shared settings (triggers, statuses)
    that the functional end-to-end tests rely on; it exports no traces."""
    yield from _running_stack(kafka_bootstrap, None)
