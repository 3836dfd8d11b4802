"""Announcing the status catalogue: a one-off background task of the worker role."""

from __future__ import annotations

import asyncio

import structlog

from accounts.service_layer import statuses
from backhaul_kit.runtime import ServiceRuntime

log = structlog.get_logger(__name__)


async def announce_status_catalogue(runtime: ServiceRuntime, *, retry_seconds: float = 5.0) -> None:
    """At worker start, publish every status once per database (see `announce_statuses`).

    Retried until it succeeds: until then other services do not know the default statuses.
    """
    while True:
        try:
            await statuses.announce_statuses(runtime.uow())
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database hiccup at start: try again, never give up
            log.exception("status_catalogue_announcement_failed", error=repr(exc))
            await asyncio.sleep(retry_seconds)
