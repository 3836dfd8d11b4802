"""The outbox and inbox tables, in every service's database.

Their migrations are the kit's, on the Alembic branch `messaging` (messaging/versions/),
which every service runs beside its own revisions: a change here is one new revision there.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Uuid,
)

from backhaul_kit.db import UtcDateTime

messaging_metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for the outbox.
_Id = BigInteger().with_variant(Integer(), "sqlite")

outbox_messages = Table(
    "outbox_messages",
    messaging_metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("event_type", String(100), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("key", String(100), nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("published_at", UtcDateTime(), nullable=True),
    Index("ix_outbox_unpublished", "published_at", "id"),
)

inbox_messages = Table(
    "inbox_messages",
    messaging_metadata,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", Uuid, primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("handled_at", UtcDateTime(), nullable=False),
)
