from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backhaul_kit.testing import Handlers, handlers_on, on_test_broker, running, without_broker
from billing.bootstrap import bootstrap
from billing.config import BillingSettings


@pytest.fixture
def settings(database_url, kafka_bootstrap, topic_prefix) -> BillingSettings:
    return on_test_broker(
        BillingSettings,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
    )


@pytest.fixture
async def service(settings):
    runtime = bootstrap(settings)
    async with running(runtime) as client:
        yield runtime, client


def no_broker_settings(database_url: str) -> BillingSettings:
    """Billing on `database_url` with no Kafka: no topics are created and no worker runs."""
    return without_broker(BillingSettings, database_url)


@pytest.fixture
async def local_service(database_url):
    """The API on a real database (SQLite and PostgreSQL), with no broker and no worker:
    events are delivered with `runtime.consumer.process`, and what is emitted stays in
    the outbox."""
    runtime = bootstrap(no_broker_settings(database_url))
    async with running(runtime, worker=False) as client:
        yield runtime, client


@pytest.fixture
async def handlers(tmp_path: Path) -> AsyncIterator[Handlers]:
    """Billing's handlers called directly on a migrated SQLite database, no broker: the
    fixture of rule-level handler tests."""
    runtime = bootstrap(no_broker_settings(f"sqlite+aiosqlite:///{tmp_path}/billing.db"))
    async with handlers_on(runtime) as on:
        yield on
