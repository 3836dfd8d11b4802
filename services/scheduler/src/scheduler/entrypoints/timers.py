"""The firing timer: a background task of the worker role."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from backhaul_kit.runtime import ServiceRuntime
from scheduler.config import SchedulerSettings
from scheduler.service_layer import handlers

log = structlog.get_logger(__name__)


async def fire_scheduled_events(runtime: ServiceRuntime) -> None:
    """Wake every `firing_interval_seconds`, fire what is due, fail what went unanswered.

    A full batch means more may be due: go again at once instead of sleeping.
    """
    settings = runtime.settings
    assert isinstance(settings, SchedulerSettings)
    timeout = timedelta(seconds=settings.answer_timeout_seconds)
    while True:
        claimed = 0
        try:
            claimed = await handlers.fire_due(runtime.uow(), batch_size=settings.firing_batch_size)
            await handlers.fail_unanswered(
                runtime.uow(), timeout=timeout, batch_size=settings.firing_batch_size
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database hiccup must not stop the timer
            log.exception("scheduled_event_firing_failed", error=repr(exc))
        if claimed < settings.firing_batch_size:
            await asyncio.sleep(settings.firing_interval_seconds)
