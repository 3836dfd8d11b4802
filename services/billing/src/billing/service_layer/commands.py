"""Commands from the scheduler (AddAccountService, RemoveAccountService): carried out
like the HTTP calls and answered either way (CommandSucceeded or CommandFailed).

Consumer-called: each on_* handler works in the consumer's open unit of work and never
enters it again. Every refusal (a domain error) is raised before the command's first write,
so answering it with CommandFailed leaves nothing of the command behind without a savepoint.
"""

from __future__ import annotations

from typing import Any

from backhaul_contracts import Envelope
from backhaul_contracts.events import billing as events
from backhaul_contracts.topics import BILLING_EVENTS
from backhaul_kit.commands import answer_command
from backhaul_kit.unit_of_work import UnitOfWork
from billing.service_layer import account_services


async def on_add_service_command(
    command: events.AddAccountService, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The scheduler's AddAccountService: done like the HTTP call, answered either way."""

    async def carry_out() -> dict[str, Any]:
        added = await account_services.add_to_account(
            uow,
            command.account_id,
            command.service_id,
            quantity=command.quantity,
            price_override=command.price_override,
            actor=command.requested_by,
        )
        return {"account_service_id": added.id, "service_id": added.service_id}

    await answer_command(uow, command, envelope, topic=BILLING_EVENTS, carry_out=carry_out)


async def on_remove_service_command(
    command: events.RemoveAccountService, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The scheduler's RemoveAccountService: done like the HTTP call, answered either way."""

    async def carry_out() -> dict[str, Any]:
        removed = await account_services.remove_service_by_catalogue_id(
            uow, command.account_id, command.service_id, actor=command.requested_by
        )
        return {"account_service_id": removed.id, "service_id": removed.service_id}

    await answer_command(uow, command, envelope, topic=BILLING_EVENTS, carry_out=carry_out)
