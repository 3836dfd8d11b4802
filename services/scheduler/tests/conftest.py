import pytest

from backhaul_kit.testing import running
from scheduler.bootstrap import bootstrap
from scheduler.config import SchedulerSettings


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
