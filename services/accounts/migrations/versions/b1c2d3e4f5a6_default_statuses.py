"""default account statuses: Lead, Active, Inactive

Revision ID: b1c2d3e4f5a6
Revises: a9b36acbcdd8
Create Date: 2026-11-22 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b1c2d3e4f5a6"
down_revision: str | None = "a9b36acbcdd8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

statuses = sa.table(
    "account_statuses",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("activates_account", sa.Boolean),
    sa.column("icon", sa.String),
    sa.column("colour", sa.String),
    sa.column("is_default", sa.Boolean),
)


def upgrade() -> None:
    # Seeds 000/001: a fresh install has Lead and Inactive (not activating) and Active.
    op.bulk_insert(
        statuses,
        [
            {
                "id": 1,
                "name": "Lead",
                "activates_account": False,
                "icon": "user-plus",
                "colour": "#9E9E9E",
                "is_default": True,
            },
            {
                "id": 2,
                "name": "Active",
                "activates_account": True,
                "icon": "check-circle",
                "colour": "#4CAF50",
                "is_default": True,
            },
            {
                "id": 3,
                "name": "Inactive",
                "activates_account": False,
                "icon": "x-circle",
                "colour": "#F44336",
                "is_default": True,
            },
        ],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('account_statuses', 'id'), 3)")


def downgrade() -> None:
    op.execute("DELETE FROM account_statuses WHERE id IN (1, 2, 3)")
