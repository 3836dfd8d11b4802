"""The inbox: a consumer records each handled event id in the effect's own transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backhaul_contracts import Envelope
from backhaul_kit.messaging.tables import inbox_messages


async def claim(session: AsyncSession, consumer: str, envelope: Envelope) -> bool:
    """Record `envelope` as handled by `consumer`; False if it already was.

    Runs inside the handler's transaction: if the effect rolls back, so does the claim.
    """
    return envelope.event_id in await claim_many(session, consumer, [envelope])


async def claim_many(
    session: AsyncSession, consumer: str, envelopes: Sequence[Envelope]
) -> set[UUID]:
    """Record a batch's events as handled by `consumer` with one statement; returns the ids
    that were not recorded before (an id twice in the batch is returned once)."""
    if not envelopes:
        return set()
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = datetime.now(UTC)
    # One statement whatever the batch's size, compiled once and cached: executemany with
    # RETURNING (SQLAlchemy's "insertmanyvalues") instead of a VALUES list of N rows, which
    # SQLAlchemy compiles again for every new N.
    statement = (
        insert(inbox_messages)
        .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        .returning(inbox_messages.c.event_id)
    )
    rows = [
        {
            "consumer": consumer,
            "event_id": envelope.event_id,
            "event_type": envelope.event_type,
            "handled_at": now,
        }
        for envelope in envelopes
    ]
    return set((await session.execute(statement, rows)).scalars().all())
