"""What billing reacts to: the account events (its replica, the final invoice) and the
scheduler's commands. The one registry of billing's event handlers: each runs in the
consumer's open unit of work."""

from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
    AccountUpdated,
)
from backhaul_contracts.events.billing import AddAccountService, RemoveAccountService
from backhaul_kit.messaging.consumer import EventConsumer
from billing.service_layer import commands, replica


def register(consumer: EventConsumer) -> None:
    consumer.on(AccountCreated)(replica.on_account_created)
    consumer.on(AccountUpdated)(replica.on_account_updated)
    consumer.on(AccountStatusChanged)(replica.on_account_status_changed)
    consumer.on(AccountDisconnected)(replica.on_account_disconnected)
    consumer.on(AddAccountService)(commands.on_add_service_command)
    consumer.on(RemoveAccountService)(commands.on_remove_service_command)
