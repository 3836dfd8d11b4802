"""Provisioning's fixtures: the service with and without Kafka, its handlers on a SQLite
file, and the events of accounts and billing as the tests feed them (fixture `ev`)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from types import ModuleType
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaProducer

from backhaul_contracts import Envelope, Event
from backhaul_contracts.common import ServiceKind, ServiceRef, StatusRef
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
)
from backhaul_contracts.events.billing import (
    AccountDelinquencyChanged,
    AccountServiceAdded,
    AccountServiceRemoved,
)
from backhaul_kit.messaging.consumer import Outcome, Record
from backhaul_kit.testing import Handlers, handlers_on, on_test_broker, running, without_broker
from provisioning.bootstrap import bootstrap
from provisioning.config import ProvisioningSettings


@pytest.fixture
def settings(database_url, kafka_bootstrap, topic_prefix) -> ProvisioningSettings:
    return on_test_broker(
        ProvisioningSettings,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
    )


@pytest.fixture
async def service(settings):
    """The service on Kafka: API, relay and consumer running against the test broker."""
    runtime = bootstrap(settings)
    async with running(runtime) as client:
        yield runtime, client


def no_kafka(database_url: str) -> ProvisioningSettings:
    """Settings that never reach a broker: no topics are created, and nothing listens on
    the bootstrap address (events stay in the outbox)."""
    return without_broker(
        ProvisioningSettings,
        database_url,
        kafka_topic_prefix="t.",
        consumer_retry_backoff_seconds=0.01,
    )


@pytest.fixture
async def local_service(database_url):
    """The service's API with no worker and no broker: events are handed to its consumer
    directly (`ev.deliver`). On each database the suite runs on."""
    runtime = bootstrap(no_kafka(database_url))
    async with running(runtime, worker=False) as client:
        yield runtime, client


@pytest.fixture
async def handlers(tmp_path) -> AsyncIterator[Handlers]:
    """Provisioning's handlers on a migrated SQLite file, called directly: no Kafka, no HTTP."""
    runtime = bootstrap(no_kafka(f"sqlite+aiosqlite:///{tmp_path}/provisioning.db"))
    async with handlers_on(runtime) as found:
        yield found


# -- events of accounts and billing --------------------------------------------------------

LEAD = StatusRef(id=1, name="Lead", activates_account=False)
ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
INACTIVE = StatusRef(id=3, name="Inactive", activates_account=False)
SUSPENDED = StatusRef(id=7, name="Suspended", activates_account=False)
VACATION = StatusRef(id=9, name="Vacation", activates_account=True)
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def envelope(event: Event, account_id: int) -> Envelope:
    return Envelope.wrap(event, producer="test", subject=account_id)


def created(account_id: int, status: StatusRef = ACTIVE) -> Envelope:
    return envelope(
        AccountCreated(
            account_id=account_id, name=f"Account {account_id}", status=status, created_at=NOW
        ),
        account_id,
    )


def status_changed(account_id: int, previous: StatusRef, status: StatusRef) -> Envelope:
    return envelope(
        AccountStatusChanged(
            account_id=account_id,
            previous_status=previous,
            status=status,
            changed_by="test",
            changed_at=NOW,
        ),
        account_id,
    )


def disconnected(
    account_id: int, disconnection_id: UUID | None = None, previous: StatusRef = ACTIVE
) -> Envelope:
    return envelope(
        AccountDisconnected(
            account_id=account_id,
            account_name=f"Account {account_id}",
            disconnection_id=disconnection_id or uuid4(),
            disconnected_at=NOW,
            disconnected_by="test",
            previous_status=previous,
            status=INACTIVE,
        ),
        account_id,
    )


def data_service(service_id: int, down: int, up: int) -> ServiceRef:
    return ServiceRef(
        service_id=service_id,
        name=f"Data {down // 1000}M",
        kind=ServiceKind.DATA,
        price=Decimal("50.00"),
        currency="USD",
        download_kbps=down,
        upload_kbps=up,
    )


def service_added(account_id: int, account_service_id: int, service: ServiceRef) -> Envelope:
    return envelope(
        AccountServiceAdded(
            account_id=account_id,
            account_service_id=account_service_id,
            service=service,
            quantity=1,
            price=service.price,
            added_at=NOW,
        ),
        account_id,
    )


def service_removed(account_id: int, account_service_id: int, service: ServiceRef) -> Envelope:
    return envelope(
        AccountServiceRemoved(
            account_id=account_id,
            account_service_id=account_service_id,
            service=service,
            removed_at=NOW,
        ),
        account_id,
    )


def delinquency(account_id: int, delinquent: bool) -> Envelope:
    return envelope(
        AccountDelinquencyChanged(account_id=account_id, delinquent=delinquent, changed_at=NOW),
        account_id,
    )


async def deliver(runtime, env: Envelope) -> Outcome:
    """Hand one event to the service's consumer as Kafka would (inbox, handler, outbox)."""
    return await runtime.consumer.process(Record(topic="x", value=env.to_bytes()))


async def publish(bootstrap: str, topic: str, *envelopes: Envelope) -> None:
    """Publish through the real broker, keyed by account like the producers do."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for env in envelopes:
            await producer.send_and_wait(topic, env.to_bytes(), key=env.subject.encode())
    finally:
        await producer.stop()


@pytest.fixture
def ev() -> ModuleType:
    """These builders, as one namespace (test modules cannot import a conftest)."""
    return sys.modules[__name__]
