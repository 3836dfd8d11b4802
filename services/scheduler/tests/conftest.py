from collections.abc import AsyncIterator

import pytest

from backhaul_kit.testing import Handlers, handlers_on, on_test_broker, running, without_broker
from scheduler.bootstrap import bootstrap
from scheduler.config import SchedulerSettings


@pytest.fixture
def settings(database_url, kafka_bootstrap, topic_prefix) -> SchedulerSettings:
    return on_test_broker(
        SchedulerSettings,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
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
    return without_broker(SchedulerSettings, database_url)


@pytest.fixture
async def service_without_bus(settings_without_bus):
    """The scheduler's API and consumer with no worker (no timer, relay or Kafka)."""
    runtime = bootstrap(settings_without_bus)
    async with running(runtime, worker=False) as client:
        yield runtime, client


@pytest.fixture
async def handlers(tmp_path) -> AsyncIterator[Handlers]:
    """The scheduler's handlers on a migrated SQLite database, no broker: rule-level tests."""
    settings = without_broker(SchedulerSettings, f"sqlite+aiosqlite:///{tmp_path}/scheduler.db")
    async with handlers_on(bootstrap(settings)) as on:
        yield on
