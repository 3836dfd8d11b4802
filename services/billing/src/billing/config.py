"""Settings of the billing service."""

from functools import lru_cache

from pydantic import Field

from backhaul_kit.config import ServiceSettings


class BillingSettings(ServiceSettings):
    service_name: str = "billing"
    http_port: int = 8002
    billing_run_hour_utc: int | None = Field(
        default=None,
        ge=0,
        le=23,
        description="Run billing (and the delinquency check) daily at this hour; off if unset",
    )


@lru_cache
def get_settings() -> BillingSettings:
    return BillingSettings()
