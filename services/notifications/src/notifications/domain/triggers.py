"""Triggers: which events send which message to whom. Pure rules, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from backhaul_contracts import Event, registry
from backhaul_contracts.topics import NOTIFICATIONS_EVENTS


class Audience(StrEnum):
    """Who a trigger writes to."""

    PRIMARY_CONTACT = "primary_contact"
    ALL_CONTACTS = "all_contacts"
    STAFF = "staff"


class TriggerProblem(ValueError):
    """A trigger names something that does not exist (an event type, a payload field)."""


def triggerable_events() -> dict[str, list[type[Event]]]:
    """Every event a trigger may name, by event type (all versions).

    Commands and outcomes have no topic of their own or are requests rather than facts, and
    our own email events would let a trigger mail about mail: none of them can trigger.
    """
    out: dict[str, list[type[Event]]] = {}
    for (event_type, _version), model in sorted(registry().items()):
        topic = model.topic
        if not topic or not topic.endswith(".events.v1") or topic == NOTIFICATIONS_EVENTS:
            continue
        out.setdefault(event_type, []).append(model)
    return out


def event_fields(event_type: str) -> set[str]:
    """The payload fields of `event_type`; TriggerProblem if no such event can trigger."""
    models = triggerable_events().get(event_type)
    if not models:
        known = ", ".join(sorted(triggerable_events()))
        raise TriggerProblem(f"unknown event type {event_type!r}; known: {known}")
    return {name for model in models for name in model.model_fields}


def check_conditions(event_type: str, conditions: Mapping[str, Any]) -> None:
    """Each condition is `dotted.path: value` (or a list: any of); the path must exist."""
    fields = event_fields(event_type)
    for path, expected in conditions.items():
        head = path.split(".", 1)[0]
        if not path or head not in fields:
            raise TriggerProblem(
                f"condition on unknown field {path!r} of {event_type}; "
                f"fields: {', '.join(sorted(fields))}"
            )
        if isinstance(expected, dict):
            raise TriggerProblem(f"condition {path!r} must be a value or a list of values")


def _lookup(payload: Mapping[str, Any], path: str) -> Any:
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


def _same(actual: Any, expected: Any) -> bool:
    # Status names are typed by people: "vacation" matches "Vacation".
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.casefold() == expected.casefold()
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    return bool(actual == expected)


def conditions_hold(conditions: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    """True when every condition holds for the event's payload (JSON form)."""
    for path, expected in conditions.items():
        actual = _lookup(payload, path)
        if actual is _MISSING:
            return False
        options = expected if isinstance(expected, list) else [expected]
        if not any(_same(actual, option) for option in options):
            return False
    return True


@dataclass(frozen=True)
class ContactView:
    """A contact as the replica knows it."""

    contact_id: int
    name: str
    email: str | None
    is_primary: bool
    message_categories: list[str] = field(default_factory=list)


def wants(contact: ContactView, category: str | None) -> bool:
    """Contacts receive only the message categories they chose; uncategorised mail is for all."""
    if category is None:
        return True
    chosen = {c.casefold() for c in contact.message_categories}
    return category.casefold() in chosen


def recipients(
    audience: Audience, category: str | None, contacts: Iterable[ContactView]
) -> list[ContactView]:
    """The account's contacts a trigger writes to (staff mail is addressed elsewhere)."""
    if audience is Audience.STAFF:
        return []
    chosen = [c for c in contacts if audience is Audience.ALL_CONTACTS or c.is_primary]
    return [c for c in chosen if wants(c, category)]
