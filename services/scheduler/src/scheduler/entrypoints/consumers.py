"""What the scheduler reacts to: its commands' outcomes, and the account and service replicas.

Outcomes have no topic of their own: each owner answers on its events topic, so the same
handler is subscribed on accounts.events.v1 and billing.events.v1.
"""

from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
    AccountUpdated,
)
from backhaul_contracts.events.billing import AccountServiceAdded, AccountServiceRemoved
from backhaul_contracts.events.outcomes import CommandFailed, CommandSucceeded
from backhaul_contracts.topics import ACCOUNTS_EVENTS, BILLING_EVENTS
from backhaul_kit.messaging.consumer import EventConsumer
from scheduler.service_layer import handlers


def register(consumer: EventConsumer) -> None:
    consumer.on(AccountCreated)(handlers.on_account_created)
    consumer.on(AccountUpdated)(handlers.on_account_updated)
    consumer.on(AccountStatusChanged)(handlers.on_account_status_changed)
    consumer.on(AccountDisconnected)(handlers.on_account_disconnected)
    consumer.on(AccountServiceAdded)(handlers.on_account_service_added)
    consumer.on(AccountServiceRemoved)(handlers.on_account_service_removed)
    # The kit keys handlers by event class, so registering the same handler once per topic
    # subscribes both topics with one handler.
    for topic in (ACCOUNTS_EVENTS, BILLING_EVENTS):
        consumer.on_topic(CommandSucceeded, topic)(handlers.on_command_succeeded)
        consumer.on_topic(CommandFailed, topic)(handlers.on_command_failed)
