"""The daily billing timer: a background task of the worker role (opt-in)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from backhaul_kit.clock import now
from backhaul_kit.runtime import ServiceRuntime
from billing.config import BillingSettings
from billing.service_layer import billing_runs

log = structlog.get_logger(__name__)


def next_run(moment: datetime, hour: int) -> datetime:
    """The next `hour`:00 UTC strictly after `moment`."""
    candidate = moment.astimezone(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return candidate if candidate > moment else candidate + timedelta(days=1)


async def run_daily_billing(runtime: ServiceRuntime) -> None:
    """Each day at `billing_run_hour_utc`, run billing for that date (which also evaluates
    delinquency). Replicas may all do it: a run bills each account once per period."""
    settings = runtime.settings
    assert isinstance(settings, BillingSettings)
    hour = settings.billing_run_hour_utc
    if hour is None:
        return
    while True:
        wake = next_run(now(), hour)
        await asyncio.sleep((wake - now()).total_seconds())
        try:
            await billing_runs.run_billing(runtime.uow(), wake.date(), actor="billing-timer")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database hiccup must not stop tomorrow's run
            log.exception("daily_billing_run_failed", error=repr(exc))
