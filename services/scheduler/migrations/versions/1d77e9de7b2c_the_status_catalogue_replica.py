"""the status catalogue replica

Revision ID: 1d77e9de7b2c
Revises: a0cc27dc7906
Create Date: 2026-11-22 11:24:20.672168
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1d77e9de7b2c"
down_revision: str | None = "a0cc27dc7906"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Filled from AccountStatusDefined / AccountStatusDeleted; accounts announces every status
    # it has once, so an upgraded scheduler learns of the statuses that existed before.
    op.create_table(
        "known_statuses",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("activates_account", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("known_statuses")
