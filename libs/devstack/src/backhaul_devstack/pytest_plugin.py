"""Fixtures for real components: a Kafka broker and a PostgreSQL server.

Kafka: KAFKA_BOOTSTRAP_SERVERS if set, else testcontainers where a Docker engine answers,
else the Maven-assembled broker. PostgreSQL: TEST_DATABASE_URL (an admin URL) if set, else
testcontainers where Docker answers, else a throwaway cluster from Debian's binaries.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker for this test session."""
    if env := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield env
        return
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from backhaul_devstack.kafka_broker import KafkaBroker, free_port

    broker = KafkaBroker(
        port=free_port(), data_dir=Path(tempfile.mkdtemp(prefix="backhaul-kafka-"))
    )
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh topic namespace, so tests sharing a broker never see each other's events.

    Its topics are deleted afterwards: a long session would otherwise pile up thousands of
    partitions on one broker.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix
    if "kafka_bootstrap" in request.fixturenames:
        _delete_topics(request.getfixturevalue("kafka_bootstrap"), prefix)


def _delete_topics(bootstrap: str, prefix: str) -> None:
    import asyncio
    import concurrent.futures

    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if doomed:
                await admin.delete_topics(doomed)
        finally:
            await admin.close()

    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, run()).result(timeout=30)
    except Exception as exc:  # cleanup must never fail a test
        print(f"could not delete test topics {prefix}*: {exc!r}")


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A SQLAlchemy async URL of a PostgreSQL server where tests may create databases."""
    if env := os.environ.get("TEST_DATABASE_URL"):
        yield env
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="asyncpg") as container:
            yield container.get_connection_url()
        return
    from backhaul_devstack.postgres import PostgresCluster

    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster.admin_url
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_database(postgres_admin_url: str) -> Callable[[], str]:
    """Create a fresh, empty database; returns its URL."""
    import asyncio

    from backhaul_devstack.postgres import create_database

    def create() -> str:
        try:
            asyncio.get_running_loop()
            import concurrent.futures

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, create_database(postgres_admin_url)).result()
        except RuntimeError:
            return asyncio.run(create_database(postgres_admin_url))

    return create


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind the suite runs on: SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    factory: Callable[[], str] = request.getfixturevalue("postgres_database")
    return factory()


@pytest.fixture
def another_database_url(database_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A second fresh, empty database of the same kind as `database_url` (to compare with)."""
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / 'another.db'}"
    factory: Callable[[], str] = request.getfixturevalue("postgres_database")
    return factory()
