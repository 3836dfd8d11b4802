"""The notifications service's composition root."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from backhaul_kit.runtime import ServiceRuntime
from notifications.adapters.smtp import Mailer, SmtpMailer
from notifications.config import NotificationsSettings, get_settings
from notifications.domain.sms import NoSmsGateway, SmsSender
from notifications.entrypoints import consumers
from notifications.entrypoints.api.routes import router
from notifications.service_layer.delivery import DeliveryPolicy, Dispatcher
from notifications.service_layer.handlers import Mailing

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


class NotificationsRuntime(ServiceRuntime):
    """The runtime plus the email dispatcher (its worker loop) and the SMS sender."""

    dispatcher: Dispatcher
    sms_sender: SmsSender


def bootstrap(
    settings: NotificationsSettings | None = None,
    *,
    mailer: Mailer | None = None,
    sms_sender: SmsSender | None = None,
) -> NotificationsRuntime:
    settings = settings or get_settings()
    runtime = NotificationsRuntime(
        settings,
        title="Backhaul notifications",
        description="Triggered email with true delivery states (Queued, Sent, Rejected, "
        "Invalid), one per event and recipient.",
        migrations_dir=MIGRATIONS,
    )
    dispatcher = Dispatcher(
        runtime.uow,
        mailer or SmtpMailer(settings),
        DeliveryPolicy(
            mail_from=settings.mail_from,
            max_attempts=settings.email_max_attempts,
            backoff_seconds=settings.email_retry_backoff_seconds,
            backoff_max_seconds=settings.email_retry_backoff_max_seconds,
            send_lease=timedelta(seconds=settings.email_send_lease_seconds),
            pre_data_lease=timedelta(seconds=settings.pre_data_lease_seconds),
            unknown_outcome=settings.email_unknown_outcome,
            batch_size=settings.email_batch_size,
            concurrency=settings.email_send_concurrency,
        ),
    )
    runtime.include_router(router)
    consumers.register(
        runtime.consumer,
        Mailing(
            staff_email=settings.staff_email,
            mail_from=settings.mail_from,
            on_queued=dispatcher.wake,
        ),
    )

    async def deliver_email(_runtime: ServiceRuntime) -> None:
        await dispatcher.run(settings.email_poll_interval_seconds)

    runtime.add_background(deliver_email)
    runtime.dispatcher = dispatcher
    # SMS has an interface but no gateway yet: the default refuses rather than pretends.
    runtime.sms_sender = sms_sender or NoSmsGateway()
    return runtime
