"""Announcing the service catalogue: a one-off background task of the worker role."""

from __future__ import annotations

import asyncio

import structlog

from backhaul_kit.runtime import ServiceRuntime
from billing.service_layer import handlers

log = structlog.get_logger(__name__)


async def announce_service_catalogue(
    runtime: ServiceRuntime, *, retry_seconds: float = 5.0
) -> None:
    """At worker start, publish every catalogue service once per database (see
    `handlers.announce_services`). Retried until it succeeds."""
    while True:
        try:
            await handlers.announce_services(runtime.uow())
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database hiccup at start: try again, never give up
            log.exception("service_catalogue_announcement_failed", error=repr(exc))
            await asyncio.sleep(retry_seconds)
