"""What accounts reacts to: the scheduler's commands and the disconnect fan-out's outcomes."""

from accounts.service_layer import accounts, disconnections
from backhaul_contracts.events.accounts import ChangeAccountStatus, DisconnectAccount
from backhaul_contracts.events.billing import InvoiceIssued
from backhaul_contracts.events.notifications import EmailRejected, EmailSent
from backhaul_contracts.events.provisioning import AccountNetworkReleased
from backhaul_kit.messaging.consumer import EventConsumer


def register(consumer: EventConsumer) -> None:
    consumer.on(ChangeAccountStatus)(accounts.on_change_status_command)
    consumer.on(DisconnectAccount)(disconnections.on_disconnect_command)
    consumer.on(InvoiceIssued)(disconnections.on_invoice_issued)
    consumer.on(AccountNetworkReleased)(disconnections.on_network_released)
    consumer.on(EmailSent)(disconnections.on_email_sent)
    consumer.on(EmailRejected)(disconnections.on_email_rejected)
