"""The operator CLI's settings: the Kafka connection every service uses, read the same way."""

from __future__ import annotations

from pydantic import model_validator

from backhaul_kit.config import ServiceSettings

REPLAY_GROUP = "backhaul-ops.replay"
"""The consumer group whose committed offsets on a DLQ remember what was replayed."""


class OpsSettings(ServiceSettings):
    """KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_CAFILE and
    KAFKA_TOPIC_PREFIX, exactly as the services read them."""

    service_name: str = "ops"

    @model_validator(mode="after")
    def _refuse_development_secrets(self) -> OpsSettings:
        # Overrides the services' check by name: the CLI verifies no tokens, so an operator
        # shell in production need not hold the services' JWT secret.
        return self

    def topic_name(self, name: str) -> str:
        """The topic on the broker: the prefix is added unless the name already has it."""
        prefix = self.kafka_topic_prefix
        return name if not prefix or name.startswith(prefix) else f"{prefix}{name}"

    def logical_name(self, topic: str) -> str:
        """The topic as the contracts name it, without the prefix."""
        prefix = self.kafka_topic_prefix
        return topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic


def get_settings() -> OpsSettings:
    return OpsSettings()
