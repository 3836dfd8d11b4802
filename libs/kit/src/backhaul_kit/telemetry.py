"""OpenTelemetry: one trace from the HTTP request through the outbox, Kafka and consumers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None


def setup_tracing(service: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install the process's tracer provider once; export over OTLP/HTTP when configured."""
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(resource=Resource.create({"service.name": f"backhaul-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{otlp_endpoint.rstrip('/')}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.force_flush()
        _provider.shutdown()


# A proxy until a provider is installed, then the provider's own tracer: getting a new one
# per span cost the outbox relay 6% of its time.
_tracer = trace.get_tracer("backhaul")


def tracer() -> trace.Tracer:
    return _tracer


def current_trace_headers() -> dict[str, str]:
    """The active trace context as W3C headers, to store with an outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, bytes]],
) -> otel_context.Context:
    if not isinstance(headers, Mapping):
        headers = {key: value.decode() for key, value in headers}
    return propagate.extract(dict(headers))
