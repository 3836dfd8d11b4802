"""What notifications reacts to: every event a trigger may name, and the contact events."""

from functools import partial

from backhaul_kit.messaging.consumer import EventConsumer
from notifications.domain.triggers import triggerable_events
from notifications.service_layer import handlers


def register(consumer: EventConsumer, mailing: handlers.Mailing) -> None:
    # Triggers are configured at run time, so every triggerable event is consumed; one with
    # no enabled trigger only updates the replica (or nothing).
    handler = partial(handlers.on_event, mailing=mailing)
    for models in triggerable_events().values():
        for model in models:
            consumer.on(model)(handler)
