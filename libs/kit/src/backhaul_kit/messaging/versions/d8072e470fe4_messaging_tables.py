"""the outbox and the inbox, owned by the kit (branch `messaging`)

Revision ID: d8072e470fe4
Revises:
Create Date: 2026-11-23 09:00:00

Every service's Alembic includes this folder (`backhaul_kit.migrations.alembic_config` adds
it to `version_locations`) and upgrades to `heads`, so a change to the outbox or the inbox
is one revision here, on this branch, instead of one in each of the five services.

Until this revision existed, each service's initial migration created these two tables
itself (the same DDL in all five). Those initial migrations no longer do, but a database
they made already has both tables while its `alembic_version` holds only the service's own
head. So this first revision creates each table and its index only when the table is
absent, and otherwise just records itself as applied:

- it is the one place that knows about that history, and it runs on every upgrade path
  (`<service> migrate`, Helm's migration Job, `alembic -c services/<svc>/alembic.ini`),
  where stamping from outside would have to be repeated in each;
- the tables it finds are the ones it would create (the services' initial migrations and
  this revision emit the same DDL on SQLite and PostgreSQL; the services' migration tests
  build such a database and compare it with a fresh one), so there is nothing to alter;
- the check is by table name only and is confined to this revision: later revisions on
  this branch are ordinary migrations that assume the tables exist.

In offline mode (`alembic upgrade --sql`) nothing can be inspected, so the script creates
the tables unconditionally: such a script is for an empty database.

Downgrading this revision drops both tables (a service's initial migration no longer does).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "d8072e470fe4"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("messaging",)
depends_on: str | Sequence[str] | None = None


def _exists(table: str) -> bool:
    if context.is_offline_mode():
        return False
    return sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if not _exists("inbox_messages"):
        op.create_table(
            "inbox_messages",
            sa.Column("consumer", sa.String(length=100), nullable=False),
            sa.Column("event_id", sa.Uuid(), nullable=False),
            sa.Column("event_type", sa.String(length=100), nullable=False),
            sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("consumer", "event_id"),
        )
    if not _exists("outbox_messages"):
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


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_unpublished")

    op.drop_table("outbox_messages")
    op.drop_table("inbox_messages")
