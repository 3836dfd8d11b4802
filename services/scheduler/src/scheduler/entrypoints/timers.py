"""The firing timer: a background task of the worker role."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog

from backhaul_kit import clock
from backhaul_kit.runtime import ServiceRuntime
from scheduler.config import SchedulerSettings
from scheduler.service_layer import firing

log = structlog.get_logger(__name__)

# While a backlog is being fired, answers are checked for timeouts at least this often (s).
ANSWER_CHECK_MAX_DELAY = 1.0


async def fire_scheduled_events(runtime: ServiceRuntime) -> None:
    """The timer: lane 0 watches the clock and fails unanswered events; while a backlog is
    being fired, `firing_lanes - 1` more lanes help it.

    Lanes claim disjoint rows (SKIP LOCKED on PostgreSQL; on SQLite the single writer takes
    them in turn), so while one waits on the database another turns its claim into commands.
    When nothing is behind, lane 0 sleeps until the next event is due (at most
    `firing_idle_seconds`), and any commit of this service's events wakes it at once: an
    event created through the API in this process, or (PostgreSQL, through the outbox's
    NOTIFY) in another. So an idle scheduler costs a few queries a second, not 30.
    """
    settings = runtime.settings
    assert isinstance(settings, SchedulerSettings)
    wakeup = asyncio.Event()
    backlog = asyncio.Event()
    runtime.outbox.listen(wakeup.set)
    await asyncio.gather(
        _watch(runtime, settings, wakeup, backlog),
        *(
            _helping_lane(runtime, settings, backlog, lane)
            for lane in range(1, settings.firing_lanes)
        ),
    )


async def _watch(
    runtime: ServiceRuntime,
    settings: SchedulerSettings,
    wakeup: asyncio.Event,
    backlog: asyncio.Event,
) -> None:
    """Lane 0: fire what is due, fail what went unanswered, then sleep until there is more.

    A full batch means more may be due: go again at once (with the helping lanes) and leave
    the answer-timeout scan (which can wait) until the backlog is fired or a second passed.
    """
    timeout = timedelta(seconds=settings.answer_timeout_seconds)
    loop = asyncio.get_running_loop()
    checked_answers_at = float("-inf")
    while True:
        pause = settings.firing_interval_seconds
        try:
            wakeup.clear()
            claimed = await firing.fire_due(runtime.uow(), batch_size=settings.firing_batch_size)
            behind = claimed >= settings.firing_batch_size
            if behind:
                backlog.set()
            due_check = loop.time() - checked_answers_at >= ANSWER_CHECK_MAX_DELAY
            if not behind or due_check:
                checked_answers_at = loop.time()
                await firing.fail_unanswered(
                    runtime.uow(), timeout=timeout, batch_size=settings.firing_batch_size
                )
            if behind:
                continue
            backlog.clear()
            wake_at = await firing.next_wake(runtime.uow(), timeout=timeout)
            pause = settings.firing_idle_seconds
            if wake_at is not None:
                pause = (wake_at - clock.now()).total_seconds()
            pause = min(max(pause, settings.firing_interval_seconds), settings.firing_idle_seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database hiccup must not stop the timer
            log.exception("scheduled_event_firing_failed", lane=0, error=repr(exc))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await wakeup.wait()


async def _helping_lane(
    runtime: ServiceRuntime, settings: SchedulerSettings, backlog: asyncio.Event, lane: int
) -> None:
    """A lane that fires beside lane 0 only while a backlog lasts."""
    while True:
        await backlog.wait()
        claimed = 0
        try:
            claimed = await firing.fire_due(runtime.uow(), batch_size=settings.firing_batch_size)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database hiccup must not stop the timer
            log.exception("scheduled_event_firing_failed", lane=lane, error=repr(exc))
        if claimed < settings.firing_batch_size:
            await asyncio.sleep(settings.firing_interval_seconds)
