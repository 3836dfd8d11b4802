"""Stage many events in the outbox with one statement.

`UnitOfWork.emit` writes one row per call, which is right for a request but dominates a
billing run of 100,000 invoices. This writes the same rows (same envelope, topic, key and
trace headers as `Outbox.add`) in one executemany. It belongs in the shared kit as
`Outbox.add_many`; it lives here until it moves there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import insert

from backhaul_contracts import Envelope, Event
from backhaul_kit.context import current_flow
from backhaul_kit.messaging.tables import outbox_messages
from backhaul_kit.telemetry import current_trace_headers
from backhaul_kit.unit_of_work import UnitOfWork


async def emit_many(uow: UnitOfWork, events: Sequence[tuple[Event, int]]) -> list[Envelope]:
    """Stage (event, subject) pairs to be published once the unit of work commits."""
    if not events:
        return []
    flow = current_flow()
    outbox = uow.outbox
    headers = current_trace_headers()
    now = datetime.now(UTC)
    envelopes = [
        Envelope.wrap(
            event,
            producer=outbox.producer,
            subject=subject,
            correlation_id=flow.correlation_id,
            causation_id=flow.causation_id,
        )
        for event, subject in events
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
    uow.emitted.extend(envelopes)  # so the relay is woken when the work commits
    return envelopes
