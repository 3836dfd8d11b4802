"""The kit's `messaging` Alembic branch, seen from a small service's migrations."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from backhaul_kit import migrations
from backhaul_kit.messaging.tables import messaging_metadata
from backhaul_kit.testing_migrations import (
    assert_legacy_database_upgrades_like_fresh,
    assert_round_trip,
    messaging_head,
    versions,
)

pytestmark = pytest.mark.integration

ENV = """
import sqlalchemy as sa

from backhaul_kit.migrations import run_env

metadata = sa.MetaData()
sa.Table(
    "widgets",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", sa.String(50), nullable=True),  # not migrated yet
)
run_env(metadata)
"""

INITIAL = """
import sqlalchemy as sa
from alembic import op

revision = "aaaa00000001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("widgets", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("widgets")
"""

MAKO = '''
"""${message}"""
import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''


@pytest.fixture
def service(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(textwrap.dedent(ENV))
    (folder / "script.py.mako").write_text(MAKO.lstrip())
    (folder / "versions" / "aaaa00000001_widgets.py").write_text(INITIAL)
    return folder


async def _messaging_drift(url: str) -> list:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        diffs = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}),
                messaging_metadata,
            )
        )
    await engine.dispose()
    # Everything else in the database is the service's, not the kit's metadata's.
    return [
        d
        for d in diffs
        if not (d[0] == "remove_table" and d[1].name not in messaging_metadata.tables)
    ]


def test_a_service_upgrades_to_both_heads_and_the_tables_are_the_kits_models(service, database_url):
    migrations.upgrade(service, database_url)

    assert versions(database_url) == {"aaaa00000001", messaging_head()}
    assert asyncio.run(_messaging_drift(database_url)) == []


def test_a_database_from_before_the_branch_keeps_its_tables(
    service, database_url, another_database_url
):
    assert_legacy_database_upgrades_like_fresh(service, database_url, another_database_url)


def test_down_to_base_and_up_again(service, database_url):
    assert_round_trip(service, database_url)


def test_makemigration_writes_on_the_services_branch_and_leaves_the_messaging_tables_alone(
    service, database_url
):
    migrations.upgrade(service, database_url)

    migrations.make_revision(service, database_url, "widget names")

    (written,) = [p for p in (service / "versions").glob("*.py") if "widget_names" in p.name]
    text = written.read_text()
    assert "down_revision = 'aaaa00000001'" in text
    assert "add_column" in text and "'name'" in text
    assert "outbox" not in text and "inbox" not in text
    assert not list(migrations.MESSAGING_VERSIONS.glob("*widget*"))
