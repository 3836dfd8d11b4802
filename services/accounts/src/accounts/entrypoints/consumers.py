"""What accounts reacts to: the scheduler's commands and the disconnect fan-out's outcomes."""

from accounts.service_layer import handlers
from backhaul_contracts.events.accounts import ChangeAccountStatus, DisconnectAccount
from backhaul_contracts.events.billing import InvoiceIssued
from backhaul_contracts.events.notifications import EmailRejected, EmailSent
from backhaul_contracts.events.provisioning import AccountNetworkReleased
from backhaul_kit.messaging.consumer import EventConsumer


def register(consumer: EventConsumer) -> None:
    consumer.on(ChangeAccountStatus)(handlers.on_change_status_command)
    consumer.on(DisconnectAccount)(handlers.on_disconnect_command)
    consumer.on(InvoiceIssued)(handlers.on_invoice_issued)
    consumer.on(AccountNetworkReleased)(handlers.on_network_released)
    consumer.on(EmailSent)(handlers.on_email_sent)
    consumer.on(EmailRejected)(handlers.on_email_rejected)
