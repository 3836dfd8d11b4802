"""Kafka clients built from settings: producer, FastStream broker, topics, readiness probe."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import structlog
from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from backhaul_contracts.topics import dead_letter_topic
from backhaul_kit.config import ServiceSettings

log = structlog.get_logger(__name__)


def _ssl_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )


def client_options(settings: ServiceSettings) -> dict[str, Any]:
    """Connection and security options for any aiokafka client. Secrets are never logged."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = _ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None
        )
    return options


def create_producer(settings: ServiceSettings) -> AIOKafkaProducer:
    """The idempotent, acks=all producer the outbox relay and the dead-letter path use."""
    return AIOKafkaProducer(
        client_id=f"backhaul-{settings.service_name}",
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        **client_options(settings),
    )


def _broker_security(settings: ServiceSettings) -> BaseSecurity | None:
    context = _ssl_context(settings)
    mechanism = settings.kafka_sasl_mechanism
    if mechanism:
        user = settings.kafka_sasl_username or ""
        secret = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        )
        cls = {
            "PLAIN": SASLPlaintext,
            "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512,
        }[mechanism]
        return cls(user, secret, ssl_context=context, use_ssl=context is not None)
    if context is not None:
        return BaseSecurity(ssl_context=context)
    return None


def create_broker(settings: ServiceSettings) -> KafkaBroker:
    """A FastStream broker for the service's subscribers. Tracing is the consumer's own: it
    opens a span per event (continuing the producer's trace), not one per polled batch."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"backhaul-{settings.service_name}",
        security=_broker_security(settings),
        log_level=logging.DEBUG,
        graceful_timeout=10.0,
    )


async def ensure_topics(settings: ServiceSettings, topics: list[str], groups: list[str]) -> None:
    """Create the topics (and their dead-letter topics) if they do not exist yet."""
    wanted = {settings.topic(t) for t in topics}
    wanted |= {dead_letter_topic(settings.topic(t), group) for t in topics for group in groups}
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(wanted - existing)
        if not missing:
            return
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=settings.kafka_topic_partitions,
                        replication_factor=settings.kafka_topic_replication_factor,
                    )
                    for name in missing
                ]
            )
        except TopicAlreadyExistsError:
            pass  # another replica won the race
        log.info("kafka_topics_created", topics=missing)
    finally:
        await admin.close()


class KafkaProbe:
    """Answers whether the Kafka cluster is reachable, for /readyz."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._client: AIOKafkaClient | None = None

    async def check(self, timeout: float = 3.0) -> None:
        try:
            if self._client is None:
                client = AIOKafkaClient(**client_options(self.settings))
                await asyncio.wait_for(client.bootstrap(), timeout)
                self._client = client
            await asyncio.wait_for(self._client.fetch_all_metadata(), timeout)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


async def watch_consumer_lag(
    settings: ServiceSettings, topics: list[str], group: str, interval: float = 15.0
) -> None:
    """Publish how far the group is behind each partition's end (the worker role runs this)."""
    from aiokafka import AIOKafkaConsumer

    from backhaul_kit.metrics import CONSUMER_LAG

    wanted = {settings.topic(t) for t in topics}
    while True:
        # Wait first: a short-lived runtime (a test) then never starts the probe clients.
        await asyncio.sleep(interval)
        admin = AIOKafkaAdminClient(**client_options(settings))
        probe = AIOKafkaConsumer(**client_options(settings))
        try:
            await admin.start()
            await probe.start()
            committed = await admin.list_consumer_group_offsets(group)
            partitions = [tp for tp in committed if tp.topic in wanted]
            ends = await probe.end_offsets(partitions) if partitions else {}
            for tp in partitions:
                lag = max(ends.get(tp, 0) - committed[tp].offset, 0)
                CONSUMER_LAG.labels(settings.service_name, tp.topic, str(tp.partition)).set(lag)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("consumer_lag_watch_failed", error=repr(exc))
        finally:
            # Bounded: a client cancelled half-started must not hold the shutdown up.
            for close in (probe.stop, admin.close):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), 5)
