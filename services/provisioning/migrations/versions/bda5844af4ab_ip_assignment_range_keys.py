"""ip assignments keep their range as sortable keys; pools keep where the next-free search starts

Revision ID: bda5844af4ab
Revises: b7f1c2d3e4a5
Create Date: 2026-11-22 14:15:59.416068

Each assignment gets `range_first`, `range_last` and `range_after` (the address after the
block): the address as 33 lowercase hex digits, zero-padded, for IPv4 and IPv6 alike, so text
order is numeric order. The database then finds overlaps and the next free address itself
(provisioning/adapters/taken_blocks.py). Existing rows, history included, are filled in from
their `address`.

`ip_pools.search_from` (a key: every usable address below it is taken but for assignments
ended since, which are marked `pending_free`) starts empty, meaning the pool's first address,
and no existing assignment is pending; the pool's next assignment moves it up.
"""

import ipaddress
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "bda5844af4ab"
down_revision: str | None = "b7f1c2d3e4a5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_DIGITS = 33  # as provisioning.domain.ipam.KEY_DIGITS; migrations never import the app
KEY = sa.String(length=KEY_DIGITS).with_variant(
    sa.String(length=KEY_DIGITS, collation="C"), "postgresql"
)
COLUMNS = ("range_first", "range_last", "range_after")
BATCH = 1000

assignments = sa.table(
    "ip_assignments",
    sa.column("id"),  # untyped: each id goes back exactly as the driver gave it
    sa.column("address", sa.String()),
    sa.column("pending_free", sa.Boolean()),
    *(sa.column(name, sa.String()) for name in COLUMNS),
)


def _key(address: int) -> str:
    return f"{address:0{KEY_DIGITS}x}"


def _backfill() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(assignments.c.id, assignments.c.address)).all()
    update = (
        assignments.update()
        .where(assignments.c.id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(f"b_{name}") for name in COLUMNS})
    )
    values = []
    for assignment_id, address in rows:
        network = ipaddress.ip_network(address, strict=True)
        first, last = int(network.network_address), int(network.broadcast_address)
        values.append(
            {
                "b_id": assignment_id,
                "b_range_first": _key(first),
                "b_range_last": _key(last),
                "b_range_after": _key(last + 1),
            }
        )
    for start in range(0, len(values), BATCH):
        connection.execute(update, values[start : start + BATCH])
    connection.execute(assignments.update().values(pending_free=False))


def upgrade() -> None:
    with op.batch_alter_table("ip_pools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("search_from", KEY, nullable=True))
    with op.batch_alter_table("ip_assignments", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, KEY, nullable=True))
        batch_op.add_column(sa.Column("pending_free", sa.Boolean(), nullable=True))
    _backfill()
    with op.batch_alter_table("ip_assignments", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.alter_column(name, existing_type=KEY, nullable=False)
        batch_op.alter_column("pending_free", existing_type=sa.Boolean(), nullable=False)
        batch_op.create_index(
            "ix_ip_assignments_current_range",
            ["pool_id", "range_first"],
            unique=True,
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
        batch_op.create_index(
            "ix_ip_assignments_pending_free",
            ["pool_id", "range_first"],
            unique=False,
            sqlite_where=sa.text("pending_free = 1"),
            postgresql_where=sa.text("pending_free"),
        )


def downgrade() -> None:
    with op.batch_alter_table("ip_assignments", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_ip_assignments_pending_free",
            sqlite_where=sa.text("pending_free = 1"),
            postgresql_where=sa.text("pending_free"),
        )
        batch_op.drop_index(
            "ix_ip_assignments_current_range",
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
        batch_op.drop_column("pending_free")
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
    with op.batch_alter_table("ip_pools", schema=None) as batch_op:
        batch_op.drop_column("search_from")
