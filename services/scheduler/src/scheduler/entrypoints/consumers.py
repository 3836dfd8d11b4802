"""What the scheduler reacts to: its commands' outcomes, and the replicas of accounts, their
services, and the status and service catalogues.

Outcomes have no topic of their own: each owner answers on its events topic, so the same
handler is subscribed on accounts.events.v1 and billing.events.v1.

Every handler registered here is called inside the consumer's open unit of work (the inbox
row, the effect and the events it emits commit together) and never enters it again.
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
from scheduler.service_layer import outcomes, replicas


def register(consumer: EventConsumer) -> None:
    consumer.on(AccountCreated)(replicas.on_account_created)
    consumer.on(AccountUpdated)(replicas.on_account_updated)
    consumer.on(AccountStatusChanged)(replicas.on_account_status_changed)
    consumer.on(AccountDisconnected)(replicas.on_account_disconnected)
    consumer.on(AccountServiceAdded)(replicas.on_account_service_added)
    consumer.on(AccountServiceRemoved)(replicas.on_account_service_removed)
    consumer.on(AccountStatusDefined)(replicas.on_account_status_defined)
    consumer.on(AccountStatusDeleted)(replicas.on_account_status_deleted)
    consumer.on(ServiceDefined)(replicas.on_service_defined)
    # The kit keys handlers by event class, so registering the same handler once per topic
    # subscribes both topics with one handler.
    for topic in (ACCOUNTS_EVENTS, BILLING_EVENTS):
        consumer.on_topic(CommandSucceeded, topic)(outcomes.on_command_succeeded)
        consumer.on_topic(CommandFailed, topic)(outcomes.on_command_failed)
