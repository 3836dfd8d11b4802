"""What a message on a topic says, decoded with the contracts when it can be."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from backhaul_contracts import Envelope, InvalidEventError, UnknownEventError, decode

RAW_PREVIEW_CHARS = 500


@dataclass(frozen=True)
class MessageView:
    """An envelope's fields, or the raw value when it is not an envelope at all.

    `decode_error` says why the contracts refused the message (unknown event type or
    version, a payload that does not fit its model, bytes that are not an envelope).
    """

    event_type: str | None = None
    version: int | None = None
    event_id: str | None = None
    subject: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    occurred_at: str | None = None
    producer: str | None = None
    payload: dict[str, Any] | None = None
    decode_error: str | None = None
    raw: str | None = None

    @property
    def decoded(self) -> bool:
        return self.decode_error is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(value: bytes | None) -> MessageView:
    """Decode a message value; never raises, whatever the bytes are."""
    if value is None:
        return MessageView(decode_error="empty value (a tombstone)")
    try:
        envelope = Envelope.model_validate_json(value)
    except ValidationError as exc:
        return MessageView(
            decode_error=f"not a valid envelope: {_validation_summary(exc)}",
            raw=value.decode("utf-8", errors="replace")[:RAW_PREVIEW_CHARS],
        )
    error: str | None = None
    try:
        decode(value)
    except (InvalidEventError, UnknownEventError) as exc:
        error = _decode_error_summary(exc)
    return MessageView(
        event_type=envelope.event_type,
        version=envelope.version,
        event_id=str(envelope.event_id),
        subject=envelope.subject,
        correlation_id=str(envelope.correlation_id),
        causation_id=str(envelope.causation_id) if envelope.causation_id else None,
        occurred_at=envelope.occurred_at.isoformat(),
        producer=envelope.producer,
        payload=envelope.payload,
        decode_error=error,
    )


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _validation_summary(exc: ValidationError, limit: int = 5) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors(include_url=False)[:limit]
    ]
    return "; ".join(problems)


def _decode_error_summary(exc: Exception) -> str:
    """The contracts' reason on one line (pydantic's own text spans several)."""
    if isinstance(exc.__cause__, ValidationError):
        what = str(exc).split(": ", 1)[0]
        return f"{what}: {_validation_summary(exc.__cause__)}"
    return " ".join(str(exc).split())
