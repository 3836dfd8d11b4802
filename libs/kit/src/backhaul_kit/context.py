"""What the current request or message is: its correlation and causation ids.

Set by the HTTP middleware and by the consumer for each message; read by the outbox so an
event written while handling something carries the flow's ids without threading them
through every function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from uuid import UUID

import structlog


@dataclass(frozen=True)
class FlowContext:
    correlation_id: UUID | None = None
    causation_id: UUID | None = None


_EMPTY = FlowContext()
_current: ContextVar[FlowContext] = ContextVar("backhaul_flow", default=_EMPTY)


def current_flow() -> FlowContext:
    return _current.get()


@contextmanager
def flow(correlation_id: UUID | None, causation_id: UUID | None = None) -> Iterator[None]:
    token = _current.set(FlowContext(correlation_id, causation_id))
    bound = structlog.contextvars.bind_contextvars(
        correlation_id=str(correlation_id) if correlation_id else None
    )
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**bound)
        _current.reset(token)
