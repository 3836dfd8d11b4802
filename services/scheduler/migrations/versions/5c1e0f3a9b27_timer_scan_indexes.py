"""partial indexes for the timer's scans

Revision ID: 5c1e0f3a9b27
Revises: 1d77e9de7b2c
Create Date: 2026-11-22 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1e0f3a9b27"
down_revision: str | None = "1d77e9de7b2c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("state = 'pending'")
DISPATCHED = sa.text("state = 'dispatched'")


def upgrade() -> None:
    # 10,000 events due at one instant share one run_at: with only (state, run_at) every
    # claim sorted all of them to take the first batch. In firing order, a claim is a range.
    op.create_index(
        "ix_scheduled_events_firing_order",
        "scheduled_events",
        ["run_at", "sequence", "created_at", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index(
        "ix_scheduled_events_awaiting_answer",
        "scheduled_events",
        ["dispatched_at"],
        postgresql_where=DISPATCHED,
        sqlite_where=DISPATCHED,
    )


def downgrade() -> None:
    op.drop_index("ix_scheduled_events_awaiting_answer", table_name="scheduled_events")
    op.drop_index("ix_scheduled_events_firing_order", table_name="scheduled_events")
