import pytest

from accounts.adapters.tables import Setting
from accounts.bootstrap import bootstrap
from accounts.config import AccountsSettings
from accounts.service_layer.statuses import CATALOGUE_ANNOUNCED_SETTING
from backhaul_kit.testing import eventually, on_test_broker, running


@pytest.fixture
def settings(database_url, kafka_bootstrap, topic_prefix) -> AccountsSettings:
    return on_test_broker(
        AccountsSettings,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
    )


@pytest.fixture
async def service(settings):
    runtime = bootstrap(settings)
    async with running(runtime) as client:
        await eventually(lambda: statuses_announced(runtime))
        yield runtime, client


async def statuses_announced(runtime) -> None:
    """The worker has announced the status catalogue (it starts doing so with the worker),
    so a test that counts events or outbox rows sees no announcement land in between."""
    async with runtime.uow() as uow:
        assert await uow.session.get(Setting, CATALOGUE_ANNOUNCED_SETTING) is not None
