"""The envelope every Backhaul message travels in, and the registry of event models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError


class Event(BaseModel):
    """Base of every event and command payload.

    Subclasses name their `event_type`, `version` and the `topic` they are published on.
    Unknown fields are ignored so that an additive change to a published version never
    breaks an older consumer.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    topic: ClassVar[str]


E = TypeVar("E", bound=type[Event])


class Envelope(BaseModel):
    """What goes on the wire: metadata plus the event's payload."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: UUID = Field(default_factory=uuid4)
    event_type: str = Field(min_length=1)
    version: int = Field(ge=1)
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    producer: str = Field(min_length=1)
    subject: str = Field(
        min_length=1,
        description=(
            "The account id the event is about; a catalogue event, about no account, names "
            "its entry instead (account-status:<id>, service:<id>)"
        ),
    )
    correlation_id: UUID
    causation_id: UUID | None = None
    payload: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        producer: str,
        subject: str | int,
        correlation_id: UUID | None = None,
        causation_id: UUID | None = None,
        event_id: UUID | None = None,
    ) -> Envelope:
        """Put an event in an envelope; a new flow starts its own correlation id."""
        new_id = event_id or uuid4()
        return cls(
            event_id=new_id,
            event_type=event.event_type,
            version=event.version,
            producer=producer,
            subject=str(subject),
            correlation_id=correlation_id or new_id,
            causation_id=causation_id,
            payload=event.model_dump(mode="json"),
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class UnknownEventError(ValueError):
    """No model is registered for an (event_type, version)."""


class InvalidEventError(ValueError):
    """The bytes are not an envelope, or the payload does not fit its model."""


_REGISTRY: dict[tuple[str, int], type[Event]] = {}


def register(cls: E) -> E:
    """Class decorator: make an event model known to `decode` and the schema export."""
    key = (cls.event_type, cls.version)
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ValueError(f"{key} is registered twice")
    _REGISTRY[key] = cls
    return cls


def registry() -> dict[tuple[str, int], type[Event]]:
    """Every registered event model by (event_type, version)."""
    return dict(_REGISTRY)


def model_for(event_type: str, version: int) -> type[Event]:
    try:
        return _REGISTRY[(event_type, version)]
    except KeyError:
        raise UnknownEventError(f"no model for {event_type} v{version}") from None


def decode(raw: bytes | str | dict[str, Any]) -> tuple[Envelope, Event]:
    """Parse a wire message into its envelope and typed payload.

    Raises InvalidEventError or UnknownEventError with a message that says what is wrong,
    so a consumer can dead-letter the message with a reason.
    """
    try:
        # pydantic-core parses the bytes itself: no json module, no intermediate dict.
        envelope = (
            Envelope.model_validate_json(raw)
            if isinstance(raw, bytes | str)
            else Envelope.model_validate(raw)
        )
    except (ValueError, ValidationError) as exc:
        raise InvalidEventError(f"not a valid envelope: {exc}") from exc
    model = model_for(envelope.event_type, envelope.version)
    try:
        event = model.model_validate(envelope.payload)
    except ValidationError as exc:
        raise InvalidEventError(
            f"payload of {envelope.event_type} v{envelope.version} is invalid: {exc}"
        ) from exc
    return envelope, event
