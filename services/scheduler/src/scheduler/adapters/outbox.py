"""Stage many events in the outbox with one statement.

The kit's `UnitOfWork.emit` writes one row per call; firing a thousand due events that way
costs a round trip each and becomes the firing lag. This writes the same rows (same
envelope, topic prefix and trace headers) in a single executemany. It belongs in the kit as
`UnitOfWork.emit_many`; until then it lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import insert

from backhaul_contracts import Envelope, Event
from backhaul_kit.context import current_flow
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.telemetry import current_trace_headers
from backhaul_kit.unit_of_work import UnitOfWork


async def emit_many(
    uow: UnitOfWork,
    events: Sequence[tuple[Event, int]],
    *,
    event_ids: Sequence[UUID] | None = None,
) -> list[Envelope]:
    """Stage `(event, account_id)` pairs, in order; returns their envelopes in the same order.

    `event_ids`, when given, are the envelopes' ids (the outbox refuses a second event with
    the same id, which callers can use as a guard).
    """
    if not events:
        return []
    outbox = uow.outbox
    flow = current_flow()
    headers = current_trace_headers()
    now = datetime.now(UTC)
    envelopes = [
        Envelope.wrap(
            event,
            producer=outbox.producer,
            subject=subject,
            correlation_id=flow.correlation_id,
            causation_id=flow.causation_id,
            event_id=event_ids[i] if event_ids is not None else None,
        )
        for i, (event, subject) in enumerate(events)
    ]
    await uow.session.execute(
        insert(outbox_messages),
        [
            {
                "event_id": envelope.event_id,
                "event_type": envelope.event_type,
                "topic": f"{outbox.topic_prefix}{event.topic}",
                "key": envelope.subject,
                "value": envelope.to_bytes(),
                "headers": headers,
                "created_at": now,
            }
            for envelope, (event, _) in zip(envelopes, events, strict=True)
        ],
    )
    uow.session.info.setdefault("outbox", outbox)
    uow.emitted.extend(envelopes)  # the unit of work wakes the relay when it commits
    return envelopes
