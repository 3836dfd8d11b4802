import pytest

from accounts.bootstrap import bootstrap
from accounts.config import AccountsSettings
from backhaul_kit.testing import running


@pytest.fixture
def settings(database_url, kafka_bootstrap, topic_prefix) -> AccountsSettings:
    return AccountsSettings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        kafka_topic_partitions=2,
        consumer_retry_backoff_seconds=0.01,
    )


@pytest.fixture
async def service(settings):
    runtime = bootstrap(settings)
    async with running(runtime) as client:
        yield runtime, client
