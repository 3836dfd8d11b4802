"""The accounts service's composition root."""

from __future__ import annotations

from pathlib import Path

from accounts.config import AccountsSettings, get_settings
from accounts.entrypoints import catalogue, consumers
from accounts.entrypoints.api.routes import router
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
    runtime.add_background(catalogue.announce_status_catalogue)
    return runtime
