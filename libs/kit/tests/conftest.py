"""Fixtures of the kit's integration tests: a database with the messaging tables, a producer."""

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table

from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.config import ServiceSettings
from backhaul_kit.db import Database
from backhaul_kit.kafka import create_producer, ensure_topics
from backhaul_kit.messaging.tables import messaging_metadata

effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer),
    Column("status", String(50)),
)


@pytest.fixture
async def db(database_url):
    database = Database(database_url)
    async with database.engine.begin() as connection:
        await connection.run_sync(messaging_metadata.create_all)
        await connection.run_sync(effects_metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
def settings(kafka_bootstrap, topic_prefix):
    return ServiceSettings(
        service_name="kit-test",
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        kafka_topic_partitions=1,
    )


@pytest.fixture
async def producer(settings):
    await ensure_topics(settings, [ACCOUNTS_EVENTS], [settings.consumer_group])
    producer = create_producer(settings)
    await producer.start()
    yield producer
    await producer.stop()
