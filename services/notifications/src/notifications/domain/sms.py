"""Text messages: the interface a real SMS gateway plugs into.

No gateway ships yet, and nothing pretends to send: with no sender configured, a text
message is refused with `SmsUnavailable` and the caller records that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class SmsUnavailable(RuntimeError):
    """No SMS gateway is configured."""


@dataclass(frozen=True)
class SmsReceipt:
    provider: str
    provider_message_id: str


class SmsSender(Protocol):
    """A gateway (Twilio, an SMPP link, ...). `send` returns the gateway's receipt."""

    async def send(self, *, to: str, text: str, idempotency_key: str) -> SmsReceipt: ...


class NoSmsGateway:
    """The default: refuses every message, so nothing is silently dropped or faked."""

    async def send(self, *, to: str, text: str, idempotency_key: str) -> SmsReceipt:
        raise SmsUnavailable("no SMS gateway is configured")
