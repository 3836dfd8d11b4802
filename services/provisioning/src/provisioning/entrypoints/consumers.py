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
from provisioning.service_layer import replica


def register(consumer: EventConsumer) -> None:
    consumer.on(AccountCreated)(replica.on_account_created)
    consumer.on(AccountStatusChanged)(replica.on_status_changed)
    consumer.on(AccountDisconnected)(replica.on_account_disconnected)
    consumer.on(AccountServiceAdded)(replica.on_service_added)
    consumer.on(AccountServiceRemoved)(replica.on_service_removed)
    consumer.on(AccountDelinquencyChanged)(replica.on_delinquency_changed)
