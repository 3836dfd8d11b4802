"""The provisioning service's composition root."""

from __future__ import annotations

from pathlib import Path

from backhaul_kit.runtime import ServiceRuntime
from provisioning.config import ProvisioningSettings, get_settings
from provisioning.entrypoints import consumers
from provisioning.entrypoints.api.routes import router

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def bootstrap(settings: ProvisioningSettings | None = None) -> ServiceRuntime:
    runtime = ServiceRuntime(
        settings or get_settings(),
        title="Backhaul provisioning",
        description=(
            "IPAM, IP assignments to accounts, inventory MACs, RADIUS accounts and "
            "uninventoried MACs; address lists for routers; FreeRADIUS tables; DHCP reservations."
        ),
        migrations_dir=MIGRATIONS,
    )
    runtime.include_router(router)
    consumers.register(runtime.consumer)
    return runtime
