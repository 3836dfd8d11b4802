from collections.abc import AsyncIterator

import pytest

from backhaul_kit.testing import Handlers, handlers_on, running
from scheduler.bootstrap import bootstrap
from scheduler.config import SchedulerSettings

# Settings of a scheduler that never reaches a broker: nothing listens on the discard port,
# and topics are not created. Tests on them call handlers or the consumer directly.
NO_KAFKA = {"kafka_bootstrap_servers": "127.0.0.1:9", "kafka_create_topics": False}


@pytest.fixture
def settings(database_url, kafka_bootstrap, topic_prefix) -> SchedulerSettings:
    return SchedulerSettings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        kafka_topic_partitions=2,
        consumer_retry_backoff_seconds=0.01,
        firing_interval_seconds=0.05,
    )


@pytest.fixture
async def service(settings):
    runtime = bootstrap(settings)
    async with running(runtime) as client:
        yield runtime, client


@pytest.fixture
def settings_without_bus(database_url) -> SchedulerSettings:
    """`settings` on each kind of database, with no broker: for tests that feed events to
    the consumer themselves or call handlers directly."""
    return SchedulerSettings(database_url=database_url, **NO_KAFKA)


@pytest.fixture
async def service_without_bus(settings_without_bus):
    """The scheduler's API and consumer with no worker (no timer, relay or Kafka)."""
    runtime = bootstrap(settings_without_bus)
    async with running(runtime, worker=False) as client:
        yield runtime, client


@pytest.fixture
async def handlers(tmp_path) -> AsyncIterator[Handlers]:
    """The scheduler's handlers on a migrated SQLite database, no broker: rule-level tests."""
    settings = SchedulerSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/scheduler.db", **NO_KAFKA
    )
    async with handlers_on(bootstrap(settings)) as on:
        yield on
