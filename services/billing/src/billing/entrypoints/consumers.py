"""What billing reacts to: the account events (its replica, the final invoice) and the
scheduler's commands."""

from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
    AccountUpdated,
)
from backhaul_contracts.events.billing import AddAccountService, RemoveAccountService
from backhaul_kit.messaging.consumer import EventConsumer
from billing.service_layer import handlers


def register(consumer: EventConsumer) -> None:
    consumer.on(AccountCreated)(handlers.on_account_created)
    consumer.on(AccountUpdated)(handlers.on_account_updated)
    consumer.on(AccountStatusChanged)(handlers.on_account_status_changed)
    consumer.on(AccountDisconnected)(handlers.on_account_disconnected)
    consumer.on(AddAccountService)(handlers.on_add_service_command)
    consumer.on(RemoveAccountService)(handlers.on_remove_service_command)
