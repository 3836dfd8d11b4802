"""What the scheduler reacts to: its commands' outcomes, and the replicas of accounts, their
services, and the status and service catalogues.

Outcomes have no topic of their own: each owner answers on its events topic, so the same
handler is subscribed on accounts.events.v1 and billing.events.v1.
"""

from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
    AccountStatusDefined,
    AccountStatusDeleted,
    AccountUpdated,
)
from backhaul_contracts.events.billing import (
    AccountServiceAdded,
    AccountServiceRemoved,
    ServiceDefined,
)
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
    consumer.on(AccountStatusDefined)(handlers.on_account_status_defined)
    consumer.on(AccountStatusDeleted)(handlers.on_account_status_deleted)
    consumer.on(ServiceDefined)(handlers.on_service_defined)
    # The kit keys handlers by event class, so registering the same handler once per topic
    # subscribes both topics with one handler.
    for topic in (ACCOUNTS_EVENTS, BILLING_EVENTS):
        consumer.on_topic(CommandSucceeded, topic)(handlers.on_command_succeeded)
        consumer.on_topic(CommandFailed, topic)(handlers.on_command_failed)
