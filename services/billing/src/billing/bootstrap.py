"""The billing service's composition root."""

from __future__ import annotations

from pathlib import Path

from backhaul_kit.announce import at_worker_start
from backhaul_kit.runtime import ServiceRuntime
from billing.config import BillingSettings, get_settings
from billing.entrypoints import consumers, timers
from billing.entrypoints.api.routes import router
from billing.service_layer.catalogue import announce_services

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def bootstrap(settings: BillingSettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or get_settings(),
        title="Backhaul billing",
        description=(
            "Service catalogue, account services, transactions, invoices, balances, "
            "billing runs and the final invoice of a disconnect."
        ),
        migrations_dir=MIGRATIONS,
    )
    runtime.include_router(router)
    consumers.register(runtime.consumer)
    runtime.add_background(timers.run_daily_billing)
    runtime.add_background(
        at_worker_start(lambda rt: announce_services(rt.uow()), name="announce_service_catalogue")
    )
    return runtime
