"""Migrations on a database that already holds data, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from backhaul_kit import migrations
from backhaul_kit.messaging.tables import messaging_metadata
from backhaul_kit.testing_migrations import (
    assert_legacy_database_upgrades_like_fresh,
    assert_round_trip,
)
from provisioning.adapters.tables import Base
from provisioning.bootstrap import MIGRATIONS, bootstrap
from provisioning.config import ProvisioningSettings
from provisioning.service_layer import queries
from provisioning.service_layer.assignments import AssignIp, assign_ip

pytestmark = pytest.mark.integration

BEFORE_RANGE_KEYS = "b7f1c2d3e4a5"
TARGETS = [Base.metadata, messaging_metadata]
NOW = datetime(2026, 11, 22, tzinfo=UTC)
TOP = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"

# The tables as they were at BEFORE_RANGE_KEYS (only the columns written here).
pools = sa.table(
    "ip_pools",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("cidr", sa.String),
    sa.column("version", sa.Integer),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
assignments = sa.table(
    "ip_assignments",
    sa.column("id", sa.Uuid),
    sa.column("pool_id", sa.Integer),
    sa.column("address", sa.String),
    sa.column("version", sa.Integer),
    sa.column("account_id", sa.Integer),
    sa.column("assignee_kind", sa.String),
    sa.column("soft", sa.Boolean),
    sa.column("assigned_at", sa.DateTime(timezone=True)),
    sa.column("assigned_by", sa.String),
    sa.column("removed_at", sa.DateTime(timezone=True)),
)
replicas = sa.table(
    "accounts",
    sa.column("account_id", sa.Integer),
    sa.column("status_id", sa.Integer),
    sa.column("activates", sa.Boolean),
    sa.column("delinquent", sa.Boolean),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


def _row(pool_id: int, address: str, version: int, *, removed: bool = False) -> dict:
    return {
        "id": uuid4(),
        "pool_id": pool_id,
        "address": address,
        "version": version,
        "account_id": 7,
        "assignee_kind": "account",
        "soft": False,
        "assigned_at": NOW,
        "assigned_by": "test",
        "removed_at": NOW if removed else None,
    }


async def _seed_before(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.execute(
            pools.insert(),
            [
                {"id": 1, "name": "v4", "cidr": "10.9.0.0/24", "version": 4, "created_at": NOW},
                {"id": 2, "name": "v6", "cidr": "2001:db8::/120", "version": 6, "created_at": NOW},
                {"id": 3, "name": "top", "cidr": TOP, "version": 6, "created_at": NOW},
            ],
        )
        await connection.execute(
            replicas.insert(),
            [
                {
                    "account_id": 7,
                    "status_id": 2,
                    "activates": True,
                    "delinquent": False,
                    "updated_at": NOW,
                }
            ],
        )
        await connection.execute(
            assignments.insert(),
            [
                _row(1, "10.9.0.1", 4),
                _row(1, "10.9.0.2", 4),
                _row(1, "10.9.0.3", 4, removed=True),  # history: .3 is free again
                _row(1, "10.9.0.3", 4, removed=True),
                _row(1, "10.9.0.4/30", 4),
                _row(2, "2001:db8::", 6),
                _row(2, "2001:db8::10/124", 6),
                _row(3, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff8/125", 6),
            ],
        )
    await engine.dispose()


async def _read(url: str, statement: sa.Executable) -> list[sa.Row]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        rows = list((await connection.execute(statement)).all())
    await engine.dispose()
    return rows


async def _schema_drift(url: str) -> list:
    """What autogenerate would still change: the migrated schema should be the models'."""
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        diffs = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(
                    sync, opts={"compare_type": True, "target_metadata": TARGETS}
                ),
                TARGETS,  # a list, as env.py gives it
            )
        )
    await engine.dispose()
    return diffs


def _partial_indexes_and_collations(url: str) -> tuple[dict[str, str], set[str]]:
    """The definitions of ip_assignments' indexes, and the collations of its range keys
    (PostgreSQL; empty on SQLite, which compares text bytewise anyway)."""
    if url.startswith("sqlite"):
        indexes = sa.text(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = 'ip_assignments' AND sql IS NOT NULL"
        )
        return dict(asyncio.run(_read(url, indexes))), set()
    indexes = sa.text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ip_assignments'"
    )
    collations = sa.text(
        "SELECT collation_name FROM information_schema.columns "
        "WHERE table_name = 'ip_assignments' AND column_name LIKE 'range_%'"
    )
    return (
        dict(asyncio.run(_read(url, indexes))),
        {name for (name,) in asyncio.run(_read(url, collations))},
    )


def test_range_keys_are_filled_in_for_existing_assignments(database_url):
    migrations.upgrade(MIGRATIONS, database_url, BEFORE_RANGE_KEYS)
    asyncio.run(_seed_before(database_url))

    migrations.upgrade(MIGRATIONS, database_url)

    rows = asyncio.run(
        _read(
            database_url,
            sa.text(
                "SELECT address, range_first, range_last, range_after FROM ip_assignments "
                "ORDER BY pool_id, range_first, removed_at"
            ),
        )
    )
    keys = {(address, first, last, after) for address, first, last, after in rows}
    assert len(rows) == 8
    assert keys == {
        ("10.9.0.1", "00000000000000000000000000a090001", "00000000000000000000000000a090001",
         "00000000000000000000000000a090002"),
        ("10.9.0.2", "00000000000000000000000000a090002", "00000000000000000000000000a090002",
         "00000000000000000000000000a090003"),
        ("10.9.0.3", "00000000000000000000000000a090003", "00000000000000000000000000a090003",
         "00000000000000000000000000a090004"),
        ("10.9.0.4/30", "00000000000000000000000000a090004", "00000000000000000000000000a090007",
         "00000000000000000000000000a090008"),
        ("2001:db8::", "020010db8000000000000000000000000", "020010db8000000000000000000000000",
         "020010db8000000000000000000000001"),
        ("2001:db8::10/124", "020010db8000000000000000000000010",
         "020010db800000000000000000000001f", "020010db8000000000000000000000020"),
        # The address after the last IPv6 address needs the 33rd digit.
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff8/125", "0" + "f" * 31 + "8", "0" + "f" * 32,
         "1" + "0" * 32),
    }  # fmt: skip
    columns = asyncio.run(_read(database_url, sa.text("SELECT * FROM ip_pools ORDER BY id")))
    assert all(row.search_from is None for row in columns)
    pending = asyncio.run(_read(database_url, sa.text("SELECT pending_free FROM ip_assignments")))
    assert [bool(row.pending_free) for row in pending] == [False] * 8
    assert asyncio.run(_schema_drift(database_url)) == []
    indexes, collations = _partial_indexes_and_collations(database_url)
    for name in ("uq_ip_assignments_current_address", "ix_ip_assignments_current_range"):
        assert "UNIQUE" in indexes[name] and "removed_at IS NULL" in indexes[name], indexes[name]
    assert "pending_free" in indexes["ix_ip_assignments_pending_free"].split("WHERE")[1]
    assert collations == (set() if database_url.startswith("sqlite") else {"C"})

    # The service carries on from the migrated rows.
    runtime = bootstrap(
        ProvisioningSettings(
            database_url=database_url,
            kafka_bootstrap_servers="127.0.0.1:1",
            kafka_topic_prefix="t.",
        )
    )

    async def carry_on() -> list[str]:
        try:
            answers = [
                await queries.next_free(runtime.uow(), 1, None),
                await queries.next_free(runtime.uow(), 2, None),
                await queries.next_free(runtime.uow(), 2, 124),
                await queries.next_free(runtime.uow(), 3, None),
            ]
            assigned = await assign_ip(
                runtime.uow(), AssignIp(account_id=7, pool_id=1), actor="test"
            )
            answers.append(assigned.address)
            answers.append(await queries.next_free(runtime.uow(), 1, None))
            used = (await queries.pool_detail(runtime.uow(), 1)).usage.used
            answers.append(str(used))
            return answers
        finally:
            await runtime.db.dispose()

    assert asyncio.run(carry_on()) == [
        "10.9.0.3",
        "2001:db8::1",
        "2001:db8::20/124",
        TOP.split("/")[0],
        "10.9.0.3",
        "10.9.0.8",
        "7",
    ]


def test_the_migration_goes_down_and_up_again(database_url):
    migrations.upgrade(MIGRATIONS, database_url, BEFORE_RANGE_KEYS)
    asyncio.run(_seed_before(database_url))
    migrations.upgrade(MIGRATIONS, database_url)

    command.downgrade(migrations.alembic_config(MIGRATIONS, database_url), BEFORE_RANGE_KEYS)
    columns = asyncio.run(
        _read(database_url, sa.text("SELECT * FROM ip_assignments ORDER BY address"))
    )
    assert len(columns) == 8
    assert "range_first" not in columns[0]._fields

    migrations.upgrade(MIGRATIONS, database_url)
    assert asyncio.run(_schema_drift(database_url)) == []


def test_a_database_migrated_before_the_kit_owned_the_outbox_upgrades_to_the_fresh_schema(
    database_url, another_database_url
):
    assert_legacy_database_upgrades_like_fresh(MIGRATIONS, database_url, another_database_url)


def test_the_migrations_go_down_to_base_and_up_again(database_url):
    assert_round_trip(MIGRATIONS, database_url)
