"""What accounts and billing would tell the scheduler, delivered straight to its replica
handlers as the consumer would (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

from backhaul_contracts.common import ServiceKind, ServiceRef, StatusRef
from backhaul_contracts.events.accounts import (
    AccountCreated,
    AccountDisconnected,
    AccountStatusDefined,
)
from backhaul_contracts.events.billing import AccountServiceAdded, ServiceDefined
from backhaul_kit.testing import Handlers
from scheduler.service_layer import replicas

ACTIVE = StatusRef(id=2, name="Active", activates_account=True)
INACTIVE = StatusRef(id=3, name="Inactive", activates_account=False)


def service_ref(service_id: int, kind: ServiceKind) -> ServiceRef:
    return ServiceRef(
        service_id=service_id,
        name=f"Service {service_id}",
        kind=kind,
        price=Decimal("50.00"),
        currency="USD",
    )


class OtherServices:
    """Accounts' and billing's events, handled by the scheduler's replica handlers."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers

    async def account_created(
        self, account_id: int, status: StatusRef = ACTIVE, parent_account_id: int | None = None
    ) -> None:
        event = AccountCreated(
            account_id=account_id,
            name=f"Account {account_id}",
            status=status,
            parent_account_id=parent_account_id,
            created_at=datetime.now(UTC),
        )
        await self.handlers.handle(replicas.on_account_created, event, subject=account_id)

    async def account_disconnected(self, account_id: int) -> None:
        event = AccountDisconnected(
            account_id=account_id,
            account_name=f"Account {account_id}",
            disconnection_id=uuid4(),
            disconnected_at=datetime.now(UTC),
            disconnected_by="staff",
            previous_status=ACTIVE,
            status=INACTIVE,
        )
        await self.handlers.handle(replicas.on_account_disconnected, event, subject=account_id)

    async def status_defined(self, status: StatusRef) -> None:
        event = AccountStatusDefined(
            status_id=status.id,
            name=status.name,
            activates_account=status.activates_account,
            icon="circle",
            colour="#9E9E9E",
            defined_at=datetime.now(UTC),
        )
        await self.handlers.handle(replicas.on_account_status_defined, event, subject=event.subject)

    async def service_defined(self, service_id: int, kind: ServiceKind) -> None:
        event = ServiceDefined(
            service_id=service_id,
            name=f"Service {service_id}",
            kind=kind,
            price=Decimal("50.00"),
            currency="USD",
            defined_at=datetime.now(UTC),
        )
        await self.handlers.handle(replicas.on_service_defined, event, subject=event.subject)

    async def service_added(
        self, account_id: int, account_service_id: int, service_id: int, kind: ServiceKind
    ) -> None:
        event = AccountServiceAdded(
            account_id=account_id,
            account_service_id=account_service_id,
            service=service_ref(service_id, kind),
            quantity=1,
            price=Decimal("50.00"),
            added_at=datetime.now(UTC),
        )
        await self.handlers.handle(replicas.on_account_service_added, event, subject=account_id)
