"""The one clock of every service: aware UTC time, so no naive datetime reaches a table."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time in UTC, timezone-aware."""
    return datetime.now(UTC)
