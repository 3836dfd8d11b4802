"""Settings every service shares, read from the environment by pydantic-settings.

Each service subclasses `ServiceSettings` with its own name and defaults and exposes a
`get_settings()`; nothing is read at import time.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Role(StrEnum):
    """What one process of a service runs."""

    ALL = "all"  # API, consumers and outbox relay in one process (development)
    API = "api"  # HTTP only (Kubernetes api Deployment)
    WORKER = "worker"  # consumers, relay and timers, with health endpoints only


DEV_JWT_SECRET = "backhaul-development-secret-change-me"  # noqa: S105 - refused outside dev


class ServiceSettings(BaseSettings):
    """Configuration common to all services. Environment variables have no prefix."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    service_name: str = "backhaul"
    environment: Environment = Environment.DEVELOPMENT
    role: Role = Role.ALL

    # HTTP
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    max_request_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_request_header_bytes: int = Field(
        default=16_384, ge=1024, description="Most bytes of header lines a request may carry"
    )

    # Database: SQLite file per service by default, PostgreSQL by DATABASE_URL.
    database_url: str | None = None
    data_dir: Path = Path("var/data")
    database_pool_size: int = 10
    auto_migrate: bool = True

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_topic_partitions: int = Field(default=6, ge=1)
    kafka_topic_replication_factor: int = Field(default=1, ge=1)
    kafka_create_topics: bool = True
    kafka_topic_prefix: str = Field(
        default="", description="Prepended to every topic; lets test runs share a broker"
    )

    # Delivery
    consumer_max_attempts: int = Field(default=5, ge=1)
    consumer_retry_backoff_seconds: float = Field(default=0.2, ge=0)
    consumer_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Most records handled in one transaction"
    )
    consumer_batch_wait_ms: int = Field(
        default=20, ge=1, le=5_000, description="How long an idle consumer waits per poll"
    )
    consumer_fetch_bytes_per_partition: int = Field(
        default=262_144,
        ge=16_384,
        le=16_777_216,
        description="Most bytes prefetched per partition: what a lagging consumer holds in "
        "memory is about this times its partitions",
    )
    outbox_poll_interval_seconds: float = Field(
        default=0.05, gt=0, description="How soon the relay looks again after publishing"
    )
    outbox_idle_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="The longest an idle relay waits between looks: a commit in the same "
        "process, or (PostgreSQL) in any process through NOTIFY, wakes it at once",
    )
    outbox_batch_size: int = Field(default=500, ge=1)

    # Observability
    otel_exporter_otlp_endpoint: str | None = None
    log_level: str = "INFO"
    log_json: bool = True

    # Security: every endpoint but health, metrics and docs needs a bearer token (a JWT)
    # with the service's scope (`<service>:read` for reads, `<service>:write` for the rest).
    auth_enabled: bool = True
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)  # HS256, for local runs
    jwt_jwks_url: str | None = None  # RS256 keys of the identity provider, for production
    jwt_audience: str = "backhaul"
    jwt_issuer: str | None = None

    @model_validator(mode="after")
    def _refuse_development_secrets(self) -> ServiceSettings:
        if (
            self.environment is not Environment.DEVELOPMENT
            and self.jwt_jwks_url is None
            and self.jwt_secret.get_secret_value() == DEV_JWT_SECRET
        ):
            raise ValueError(
                "the development JWT secret is refused outside development: "
                "set JWT_SECRET (HS256) or JWT_JWKS_URL (RS256)"
            )
        if self.environment is Environment.PRODUCTION and not self.auth_enabled:
            raise ValueError("AUTH_ENABLED=false is refused in production")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / f'{self.service_name}.db'}"

    @property
    def consumer_group(self) -> str:
        return self.service_name

    def topic(self, name: str) -> str:
        return f"{self.kafka_topic_prefix}{name}"
