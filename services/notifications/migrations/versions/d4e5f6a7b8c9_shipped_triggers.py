"""shipped triggers: disconnect, final invoice, vacation, delinquent, scheduled event failed

Revision ID: d4e5f6a7b8c9
Revises: 741a1c497936
Create Date: 2026-11-22 08:40:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "d4e5f6a7b8c9"
down_revision: str | None = "741a1c497936"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

triggers = sa.table(
    "triggers",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("event_type", sa.String),
    sa.column("conditions", sa.JSON),
    sa.column("audience", sa.String),
    sa.column("category", sa.String),
    sa.column("subject_template", sa.String),
    sa.column("body_template", sa.String),
    sa.column("enabled", sa.Boolean),
    sa.column("shipped", sa.Boolean),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)

SIGNATURE = "\n\n-- \nYour Internet service provider\n"

SHIPPED = [
    {
        "id": 1,
        "name": "Account disconnected",
        "event_type": "AccountDisconnected",
        "conditions": {},
        "audience": "primary_contact",
        "subject_template": "Your account {{ account.name }} has been disconnected",
        "body_template": (
            "Hello {{ contact.name }},\n\n"
            "your account {{ account.name }} (#{{ account.id }}) was disconnected on "
            "{{ event.disconnected_at[:10] }}.\n"
            "A final invoice for any outstanding charges will follow.\n"
            "If this is unexpected, please contact us." + SIGNATURE
        ),
    },
    {
        "id": 2,
        "name": "Final invoice issued",
        "event_type": "InvoiceIssued",
        "conditions": {"final": True},
        "audience": "primary_contact",
        "subject_template": "Your final invoice {{ event.number }}",
        "body_template": (
            "Hello {{ contact.name }},\n\n"
            "the final invoice {{ event.number }} for account {{ account.name }} "
            "is {{ event.total }} {{ event.currency }}, due on {{ event.due_date }}." + SIGNATURE
        ),
    },
    {
        "id": 3,
        "name": "Account on vacation",
        "event_type": "AccountStatusChanged",
        "conditions": {"status.name": ["Vacation"]},
        "audience": "primary_contact",
        "subject_template": "Your account {{ account.name }} is in vacation mode",
        "body_template": (
            "Hello {{ contact.name }},\n\n"
            "your account {{ account.name }} is now in vacation mode "
            "(previously {{ event.previous_status.name }}). Your service stays reachable "
            "at a reduced rate until you return." + SIGNATURE
        ),
    },
    {
        "id": 4,
        "name": "Account delinquent",
        "event_type": "AccountStatusChanged",
        "conditions": {"status.name": ["Delinquent", "Collections"]},
        "audience": "primary_contact",
        "subject_template": "Action needed on your account {{ account.name }}",
        "body_template": (
            "Hello {{ contact.name }},\n\n"
            "your account {{ account.name }} has an overdue balance and is now in "
            "{{ event.status.name }}. Please pay the outstanding invoices to avoid an "
            "interruption of service." + SIGNATURE
        ),
    },
    {
        "id": 5,
        "name": "Scheduled event failed",
        "event_type": "ScheduledEventFailed",
        "conditions": {},
        "audience": "staff",
        "subject_template": "Scheduled {{ event.action }} failed for account {{ account.id }}",
        "body_template": (
            "The scheduled event {{ event.scheduled_event_id }} ({{ event.action }}) of "
            "account {{ account.name }} (#{{ account.id }}) failed at {{ event.failed_at }}:\n\n"
            "{{ event.reason }}\n"
        ),
    },
]


def upgrade() -> None:
    now = datetime.now(UTC)
    op.bulk_insert(
        triggers,
        [
            {
                **row,
                "category": None,
                "enabled": True,
                "shipped": True,
                "created_at": now,
                "updated_at": now,
            }
            for row in SHIPPED
        ],
    )
    if op.get_bind().dialect.name == "postgresql":
        # Ids were given explicitly: move the sequence past them for triggers added later.
        op.execute("SELECT setval('triggers_id_seq', (SELECT max(id) FROM triggers))")


def downgrade() -> None:
    op.execute("DELETE FROM triggers WHERE shipped")
