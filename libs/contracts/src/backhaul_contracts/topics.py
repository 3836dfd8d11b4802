"""Kafka topic names. Every topic is keyed by account id so one account's events stay in order."""

from typing import Final

ACCOUNTS_EVENTS: Final = "accounts.events.v1"
BILLING_EVENTS: Final = "billing.events.v1"
SCHEDULER_EVENTS: Final = "scheduler.events.v1"
PROVISIONING_EVENTS: Final = "provisioning.events.v1"
NOTIFICATIONS_EVENTS: Final = "notifications.events.v1"
ACCOUNTS_COMMANDS: Final = "accounts.commands.v1"
BILLING_COMMANDS: Final = "billing.commands.v1"

ALL_TOPICS: Final = (
    ACCOUNTS_EVENTS,
    BILLING_EVENTS,
    SCHEDULER_EVENTS,
    PROVISIONING_EVENTS,
    NOTIFICATIONS_EVENTS,
    ACCOUNTS_COMMANDS,
    BILLING_COMMANDS,
)


def dead_letter_topic(topic: str, group: str) -> str:
    """The topic a consumer group puts a message on once it gives up on it."""
    return f"{topic}.{group}.dlq"
