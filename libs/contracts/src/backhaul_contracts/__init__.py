"""Backhaul's published contracts: the envelope, topic names and every event model.

This package is the one place a consumer outside the project needs.
"""

from backhaul_contracts import topics
from backhaul_contracts.envelope import (
    Envelope,
    Event,
    InvalidEventError,
    UnknownEventError,
    decode,
    model_for,
    register,
    registry,
)
from backhaul_contracts.events import (
    accounts,
    billing,
    notifications,
    outcomes,
    provisioning,
    scheduler,
)

__all__ = [
    "Envelope",
    "Event",
    "InvalidEventError",
    "UnknownEventError",
    "accounts",
    "billing",
    "decode",
    "model_for",
    "notifications",
    "outcomes",
    "provisioning",
    "register",
    "registry",
    "scheduler",
    "topics",
]
