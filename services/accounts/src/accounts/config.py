"""Settings of the accounts service."""

from functools import lru_cache

from backhaul_kit.config import ServiceSettings


class AccountsSettings(ServiceSettings):
    service_name: str = "accounts"
    http_port: int = 8001


@lru_cache
def get_settings() -> AccountsSettings:
    return AccountsSettings()
