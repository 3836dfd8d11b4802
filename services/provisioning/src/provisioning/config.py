"""Settings of the provisioning service."""

from functools import lru_cache

from backhaul_kit.config import ServiceSettings


class ProvisioningSettings(ServiceSettings):
    service_name: str = "provisioning"
    http_port: int = 8004


@lru_cache
def get_settings() -> ProvisioningSettings:
    return ProvisioningSettings()
