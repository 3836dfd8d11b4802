"""Announcing a catalogue: publish every row once per database, so replicas learn of rows
written before their events existed (defaults from a migration, older data).

Every later change publishes its own event; this runs once, at worker start. The rows are
locked while they are read (on PostgreSQL), so an edit running at the same moment is
published after the announcement, never before it. A marker row in the service's settings
table records that it was done; a second call (another replica, a restart) does nothing,
and deleting the marker makes the next worker start announce again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import structlog
from sqlalchemy import Select
from sqlalchemy.exc import IntegrityError

from backhaul_kit.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

ANNOUNCED = "1"


class Marker(Protocol):
    key: Any
    value: Any


async def announce_once(
    uow: UnitOfWork,
    rows: Select[Any],
    announce: Callable[[UnitOfWork, Any], Awaitable[object]],
    *,
    marker: type[Marker],
    key: str,
) -> int:
    """Call `announce` for every row of `rows` unless `marker` holds `key`; returns how
    many were announced (0 when already done)."""
    try:
        async with uow:
            if not uow.db.is_sqlite:
                rows = rows.with_for_update()
            found = list(await uow.session.scalars(rows))
            done = await uow.session.get(marker, key)
            if done is not None and done.value == ANNOUNCED:
                return 0
            for row in found:
                await announce(uow, row)
            if done is None:
                uow.session.add(marker(key=key, value=ANNOUNCED))  # type: ignore[call-arg]
            else:
                done.value = ANNOUNCED
            await uow.session.flush()
    except IntegrityError:
        return 0  # another replica announced them at the same moment and got there first
    log.info("catalogue_announced", marker=key, rows=len(found))
    return len(found)


def at_worker_start(
    work: Callable[[Any], Awaitable[object]], *, name: str, retry_seconds: float = 5.0
) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """A background task that runs `work(runtime)` once, retrying until it succeeds (until
    then, other services' replicas miss what it announces)."""

    async def task(runtime: Any) -> None:
        while True:
            try:
                await work(runtime)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database hiccup at start: try again, never give up
                log.exception("start_task_failed", task=name, error=repr(exc))
                await asyncio.sleep(retry_seconds)

    task.__name__ = name
    return task
