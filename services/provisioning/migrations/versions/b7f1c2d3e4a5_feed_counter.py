"""the address-list feed counter starts at zero

Revision ID: b7f1c2d3e4a5
Revises: 3cbfceb74721
Create Date: 2026-11-22 08:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7f1c2d3e4a5"
down_revision: str | None = "3cbfceb74721"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

counters = sa.table("feed_counters", sa.column("name", sa.String), sa.column("value", sa.Integer))


def upgrade() -> None:
    # The changes feed takes its positions from this row (see handlers._next_seq).
    op.bulk_insert(counters, [{"name": "address_lists", "value": 0}])


def downgrade() -> None:
    op.execute(counters.delete().where(counters.c.name == "address_lists"))
