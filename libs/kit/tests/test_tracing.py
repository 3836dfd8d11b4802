"""One trace from the request that writes an event, through the relay and Kafka, to its consumer."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from backhaul_contracts.events.accounts import AccountStatusChanged
from backhaul_contracts.topics import ACCOUNTS_EVENTS
from backhaul_kit.kafka import create_broker
from backhaul_kit.messaging.outbox import Outbox
from backhaul_kit.messaging.relay import OutboxRelay
from backhaul_kit.telemetry import setup_tracing, tracer
from backhaul_kit.testing import eventually
from backhaul_kit.unit_of_work import UnitOfWork

from .test_messaging import _changed, _consumer

pytestmark = pytest.mark.integration


async def test_the_consumer_continues_the_producers_trace(db, settings, producer):
    provider = setup_tracing("kit-test", None)
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    seen: list[int] = []
    consumer = _consumer(db, settings, producer)

    @consumer.on(AccountStatusChanged)
    async def remember(event, envelope, uow):
        seen.append(trace.get_current_span().get_span_context().trace_id)

    broker = create_broker(settings)
    consumer.subscribe(broker)
    await broker.start()
    try:
        outbox = Outbox("kit-test", topic_prefix=settings.kafka_topic_prefix)
        with tracer().start_as_current_span("POST /accounts/1/status") as request_span:
            async with UnitOfWork(db, outbox) as uow:
                await uow.emit(_changed(1), subject=1)
        await OutboxRelay(db, outbox, producer).publish_batch()

        async def consumed():
            assert seen

        await eventually(consumed)
    finally:
        await broker.stop()

    trace_id = request_span.get_span_context().trace_id
    assert seen == [trace_id]
    spans = [s for s in exported.get_finished_spans() if s.context.trace_id == trace_id]
    kinds = {s.kind for s in spans}
    assert {trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER} <= kinds
    publish = next(s for s in spans if s.kind is trace.SpanKind.PRODUCER)
    assert publish.attributes["messaging.destination.name"] == settings.topic(ACCOUNTS_EVENTS)
    assert publish.parent.span_id == request_span.get_span_context().span_id
