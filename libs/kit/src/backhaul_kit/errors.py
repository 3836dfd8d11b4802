"""Domain errors every service raises, and the one table that maps them to HTTP."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain refused the request. The message is shown to the caller."""

    status_code = 400
    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    """The request conflicts with the current state (a second disconnect, a taken id)."""

    status_code = 409
    code = "conflict"


class InvalidInput(DomainError):
    status_code = 422
    code = "invalid_input"
