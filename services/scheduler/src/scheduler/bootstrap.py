"""The scheduler service's composition root."""

from __future__ import annotations

from pathlib import Path

from backhaul_kit.runtime import ServiceRuntime
from scheduler.config import SchedulerSettings, get_settings
from scheduler.entrypoints import consumers, timers
from scheduler.entrypoints.api.routes import router

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def bootstrap(settings: SchedulerSettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or get_settings(),
        title="Backhaul scheduler",
        description="Scheduled account changes that fire once, on time, and record the outcome.",
        migrations_dir=MIGRATIONS,
    )
    runtime.include_router(router)
    consumers.register(runtime.consumer)
    runtime.add_background(timers.fire_scheduled_events)
    return runtime
