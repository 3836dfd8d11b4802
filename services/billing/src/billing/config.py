"""Settings of the billing service."""

from functools import lru_cache

from backhaul_kit.config import ServiceSettings


class BillingSettings(ServiceSettings):
    service_name: str = "billing"
    http_port: int = 8002


@lru_cache
def get_settings() -> BillingSettings:
    return BillingSettings()
