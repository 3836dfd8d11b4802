"""The accounts service's composition root."""

from __future__ import annotations

from pathlib import Path

from accounts.config import AccountsSettings, get_settings
from accounts.entrypoints import consumers
from accounts.entrypoints.api.routes import router
from accounts.service_layer.statuses import announce_statuses
from backhaul_kit.announce import at_worker_start
from backhaul_kit.runtime import ServiceRuntime

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def bootstrap(settings: AccountsSettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or get_settings(),
        title="Backhaul accounts",
        description="Accounts, statuses, contacts, disconnections and their progress.",
        migrations_dir=MIGRATIONS,
    )
    runtime.include_router(router)
    consumers.register(runtime.consumer)
    runtime.add_background(
        at_worker_start(lambda rt: announce_statuses(rt.uow()), name="announce_status_catalogue")
    )
    return runtime
