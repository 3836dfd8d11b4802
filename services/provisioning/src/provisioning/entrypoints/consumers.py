"""What provisioning reacts to: account statuses and disconnects, data services, delinquency."""

from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusChanged,
)
from backhaul_contracts.events.billing import (
    AccountDelinquencyChanged,
    AccountServiceAdded,
    AccountServiceRemoved,
)
from backhaul_kit.messaging.consumer import EventConsumer
from provisioning.service_layer import handlers


def register(consumer: EventConsumer) -> None:
    consumer.on(AccountCreated)(handlers.on_account_created)
    consumer.on(AccountStatusChanged)(handlers.on_status_changed)
    consumer.on(AccountDisconnected)(handlers.on_account_disconnected)
    consumer.on(AccountServiceAdded)(handlers.on_service_added)
    consumer.on(AccountServiceRemoved)(handlers.on_service_removed)
    consumer.on(AccountDelinquencyChanged)(handlers.on_delinquency_changed)
