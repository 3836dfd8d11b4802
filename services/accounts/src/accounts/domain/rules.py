"""Rules of accounts, statuses and disconnections (seeds 000, 001, 003, 004)."""

from __future__ import annotations

import re
from enum import StrEnum

from backhaul_kit.errors import InvalidInput

DEFAULT_STATUSES: tuple[tuple[str, bool, str, str], ...] = (
    # name, activates_account, icon, colour
    ("Lead", False, "user-plus", "#9E9E9E"),
    ("Active", True, "check-circle", "#4CAF50"),
    ("Inactive", False, "x-circle", "#F44336"),
)

# The common custom statuses of seeds 000/001: an optional, documented seed set.
SUGGESTED_STATUSES: tuple[tuple[str, bool, str, str], ...] = (
    ("Pending Install", False, "clock", "#FF9800"),
    ("Collections", False, "dollar-sign", "#795548"),
    ("Failed Install", False, "alert-triangle", "#E91E63"),
    ("Terminated - Win Back", False, "user-minus", "#3F51B5"),
    ("Terminated - No Win Back", False, "user-x", "#212121"),
    ("Vacation", True, "sun", "#00BCD4"),
)

_HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
NAMED_COLOURS = frozenset(
    {
        "red",
        "pink",
        "purple",
        "deep-purple",
        "indigo",
        "blue",
        "light-blue",
        "cyan",
        "teal",
        "green",
        "light-green",
        "lime",
        "yellow",
        "amber",
        "orange",
        "deep-orange",
        "brown",
        "grey",
        "blue-grey",
        "black",
        "white",
    }
)


def normalise_colour(value: str) -> str:
    """A colour is a hex value (#abc or #aabbcc) or a colour-picker name."""
    value = value.strip()
    if _HEX.match(value):
        return value.upper() if len(value) == 7 else "#" + "".join(c * 2 for c in value[1:]).upper()
    if value.lower() in NAMED_COLOURS:
        return value.lower()
    raise InvalidInput(f"colour {value!r} is neither a hex value like #4CAF50 nor a picker colour")


class StepName(StrEnum):
    """The fan-out steps of a disconnect that accounts follows."""

    FINAL_INVOICE = "final_invoice"
    NETWORK_RELEASE = "network_release"
    EMAIL = "email"


class StepState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


def disconnect_progress(states: list[StepState]) -> str:
    """A disconnection is complete when no step is pending, failed if any step failed."""
    if any(state is StepState.PENDING for state in states):
        return "in_progress"
    if any(state is StepState.FAILED for state in states):
        return "failed"
    return "complete"


def address_key(line1: str, city: str, postal_code: str | None, country: str) -> str:
    """One serviceable address, however it is spelt: case and spacing do not matter."""
    parts = [line1, city, postal_code or "", country]
    return "|".join(" ".join(part.lower().split()) for part in parts)


def creates_cycle(child_id: int, parent_id: int, parent_of: dict[int, int | None]) -> bool:
    """Would making `parent_id` the parent of `child_id` put an account among its ancestors?

    `parent_of` maps each account on the proposed parent's chain of ancestors to its parent.
    """
    seen: set[int] = set()
    current: int | None = parent_id
    while current is not None:
        if current == child_id or current in seen:
            return True
        seen.add(current)
        current = parent_of.get(current)
    return False


def groups_label(names: list[str]) -> str:
    """What the account header shows for its groups (seed 003)."""
    return ", ".join(sorted(names)) if names else "[No Groups]"
