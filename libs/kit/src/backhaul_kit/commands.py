"""Carrying out a command from another service, and answering it either way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from backhaul_contracts import Envelope
from backhaul_contracts.events.outcomes import CommandFailed, CommandSucceeded, FailureCode
from backhaul_kit.errors import Conflict, DomainError, NotFound
from backhaul_kit.unit_of_work import UnitOfWork


class AccountCommand(Protocol):
    @property
    def account_id(self) -> int: ...

    @property
    def event_type(self) -> str: ...


def failure_code(error: DomainError) -> FailureCode:
    if isinstance(error, NotFound):
        return FailureCode.NOT_FOUND
    if isinstance(error, Conflict):
        return FailureCode.CONFLICT
    return FailureCode.INVALID


async def answer_command(
    uow: UnitOfWork,
    command: AccountCommand,
    envelope: Envelope,
    *,
    topic: str,
    carry_out: Callable[[], Awaitable[dict[str, Any]]],
) -> None:
    """Run `carry_out` (the same handler the HTTP call uses) and publish the outcome on the
    answering service's `topic`, naming the command in causation_id.

    A refusal (a domain error) is an answer, not a failure of the message: `carry_out` runs
    in a savepoint of the consumer's transaction, so what it changed before refusing is
    rolled back, and `CommandFailed` says why; anything else is raised, so the consumer
    retries and, in the end, dead-letters the command. (Commands are few: the savepoint is
    the price of a refusal that can never leave half a change behind.)
    """
    outcome: CommandSucceeded | CommandFailed
    try:
        async with uow:  # a savepoint: the consumer's transaction is open
            result = await carry_out()
        outcome = CommandSucceeded(
            account_id=command.account_id, command_type=command.event_type, result=result
        )
    except DomainError as error:
        outcome = CommandFailed(
            account_id=command.account_id,
            command_type=command.event_type,
            reason=error.message,
            code=failure_code(error),
        )
    await uow.emit(outcome, subject=command.account_id, topic=topic, causation_id=envelope.event_id)
