"""Helpers for the services' migration tests: a database as the migrations made it before
the kit owned the outbox and inbox, and a comparable picture of a database's schema."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from backhaul_kit import migrations

Schema = dict[str, dict[str, Any]]


def create_legacy_messaging_tables(op: Operations) -> None:
    """The outbox and inbox exactly as every service's initial migration created them until
    the kit's `messaging` branch took them over (a frozen copy: do not edit)."""
    op.create_table(
        "inbox_messages",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )
    op.create_table(
        "outbox_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_unpublished", ["published_at", "id"], unique=False)


def _on(url: str, work: Callable[[Connection], Any], *, commit: bool = False) -> Any:
    async def run() -> Any:
        engine = create_async_engine(url)
        try:
            async with engine.begin() if commit else engine.connect() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def build_legacy_database(migrations_dir: Path, url: str) -> None:
    """Make the database a service's migrations made before the kit's `messaging` branch:
    the service's revisions up to its head, the outbox and inbox, and `alembic_version`
    holding the service's head alone.

    The old initial migration created the two tables first; they are created last here.
    Nothing in between touches them, so the schema is the same.
    """
    head = migrations.service_head(migrations.alembic_config(migrations_dir, url))
    migrations.upgrade(migrations_dir, url, head)

    def legacy(connection: Connection) -> None:
        create_legacy_messaging_tables(Operations(MigrationContext.configure(connection)))

    _on(url, legacy, commit=True)


def versions(url: str) -> set[str]:
    """The revisions in the database's `alembic_version`."""
    rows = _on(url, lambda c: c.execute(sa.text("SELECT version_num FROM alembic_version")).all())
    return {version for (version,) in rows}


def schema(url: str) -> Schema:
    """Every table but alembic_version, as SQLAlchemy inspects it: columns (type,
    nullability, default), primary key, indexes, unique constraints and foreign keys."""

    def inspect(connection: Connection) -> Schema:
        inspector = sa.inspect(connection)
        tables: Schema = {}
        for table in sorted(inspector.get_table_names()):
            if table == "alembic_version":
                continue
            tables[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in inspector.get_columns(table)
                ],
                "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    (u["name"] or "", tuple(u["column_names"]))
                    for u in inspector.get_unique_constraints(table)
                ),
                "foreign_keys": sorted(
                    (f["name"] or "", tuple(f["constrained_columns"]), f["referred_table"])
                    for f in inspector.get_foreign_keys(table)
                ),
            }
        return tables

    result: Schema = _on(url, inspect)
    return result


def assert_legacy_database_upgrades_like_fresh(
    migrations_dir: Path, legacy_url: str, fresh_url: str
) -> None:
    """A database from before the `messaging` branch upgrades to `heads` with its outbox
    and inbox kept (rows included) and ends with the schema of a freshly migrated one."""
    build_legacy_database(migrations_dir, legacy_url)
    head = migrations.service_head(migrations.alembic_config(migrations_dir, legacy_url))
    assert versions(legacy_url) == {head}
    _on(
        legacy_url,
        lambda c: c.execute(
            sa.text(
                "INSERT INTO inbox_messages (consumer, event_id, event_type, handled_at) "
                "VALUES ('legacy', '00000000-0000-0000-0000-000000000001', 'E', "
                "'2026-11-22 00:00:00+00:00')"
            )
        ),
        commit=True,
    )

    migrations.upgrade(migrations_dir, legacy_url)
    migrations.upgrade(migrations_dir, fresh_url)

    assert versions(legacy_url) == versions(fresh_url) == {head, messaging_head()}
    kept = _on(
        legacy_url,
        lambda c: c.execute(sa.text("SELECT consumer FROM inbox_messages")).scalars().all(),
    )
    assert kept == ["legacy"]
    assert schema(legacy_url) == schema(fresh_url)


def assert_round_trip(migrations_dir: Path, url: str) -> None:
    """Fresh to `heads`, down to base (nothing left but alembic_version), and up again to
    the same schema."""
    migrations.upgrade(migrations_dir, url)
    migrated = schema(url)
    assert {"outbox_messages", "inbox_messages"} <= migrated.keys()
    command.downgrade(migrations.alembic_config(migrations_dir, url), "base")
    assert schema(url) == {}
    assert versions(url) == set()
    migrations.upgrade(migrations_dir, url)
    assert schema(url) == migrated


def messaging_head() -> str:
    """The head of the kit's `messaging` branch."""
    folder = str(migrations.MESSAGING_VERSIONS)
    head = ScriptDirectory(folder, version_locations=[folder]).get_revision(
        f"{migrations.MESSAGING_BRANCH}@head"
    )
    assert head is not None
    return head.revision
