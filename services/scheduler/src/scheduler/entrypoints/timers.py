"""The firing timer: a background task of the worker role."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from backhaul_kit.runtime import ServiceRuntime
from scheduler.config import SchedulerSettings
from scheduler.service_layer import firing

log = structlog.get_logger(__name__)

# While a backlog is being fired, answers are checked for timeouts at least this often (s).
ANSWER_CHECK_MAX_DELAY = 1.0


async def fire_scheduled_events(runtime: ServiceRuntime) -> None:
    """The timer: `firing_lanes` firing loops, the first of which also fails unanswered events.

    Lanes claim disjoint rows (SKIP LOCKED on PostgreSQL; on SQLite the single writer takes
    them in turn), so while one waits on the database another turns its claim into commands.
    """
    settings = runtime.settings
    assert isinstance(settings, SchedulerSettings)
    await asyncio.gather(
        *(_firing_lane(runtime, settings, lane) for lane in range(settings.firing_lanes))
    )


async def _firing_lane(runtime: ServiceRuntime, settings: SchedulerSettings, lane: int) -> None:
    """Wake every `firing_interval_seconds` and fire what is due.

    A full batch means more may be due: go again at once instead of sleeping, and leave the
    answer-timeout scan (which can wait) until the backlog is fired or a second has passed.
    """
    timeout = timedelta(seconds=settings.answer_timeout_seconds)
    loop = asyncio.get_running_loop()
    checked_answers_at = float("-inf")
    while True:
        claimed = 0
        try:
            claimed = await firing.fire_due(runtime.uow(), batch_size=settings.firing_batch_size)
            behind = claimed >= settings.firing_batch_size
            due_check = loop.time() - checked_answers_at >= ANSWER_CHECK_MAX_DELAY
            if lane == 0 and (not behind or due_check):
                checked_answers_at = loop.time()
                await firing.fail_unanswered(
                    runtime.uow(), timeout=timeout, batch_size=settings.firing_batch_size
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database hiccup must not stop the timer
            log.exception("scheduled_event_firing_failed", lane=lane, error=repr(exc))
        if claimed < settings.firing_batch_size:
            await asyncio.sleep(settings.firing_interval_seconds)
