import pytest

from backhaul_kit.testing import running
from provisioning.bootstrap import bootstrap
from provisioning.config import ProvisioningSettings


@pytest.fixture
def settings(database_url, kafka_bootstrap, topic_prefix) -> ProvisioningSettings:
    return ProvisioningSettings(
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
