"""An account's services: adding them (one by one or a package) and removing them.

API-called handlers own their unit of work; `add_to_account` and
`remove_service_by_catalogue_id` work in the caller's (the scheduler's commands run them in
the consumer's, see commands.py)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from backhaul_contracts.common import ServiceKind
from backhaul_contracts.events import billing as events
from backhaul_kit.clock import now
from backhaul_kit.errors import Conflict, InvalidInput, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import AccountService, BillingAccount, Package, Service
from billing.domain import rules
from billing.domain.money import parse_amount
from billing.service_layer import ledger, recurring
from billing.service_layer.catalogue import service_ref
from billing.service_layer.ledger import get_account, get_service


async def _add_service(
    uow: UnitOfWork,
    account: BillingAccount,
    service: Service,
    *,
    quantity: int,
    price_override: Decimal | None,
    prorates: bool | None,
    actor: str,
    day: date,
    package_id: int | None = None,
) -> AccountService:
    kind = ServiceKind(service.kind)
    if kind not in rules.RECURRING_KINDS:
        raise InvalidInput(
            f"service {service.id} is a {kind.value} service, charged once: add it with "
            f"POST /accounts/{account.id}/debits"
        )
    if account.disconnected_at is not None:
        raise Conflict(f"account {account.id} is disconnected: services cannot be added")
    if quantity < 1:
        raise InvalidInput(f"quantity {quantity} must be at least 1")
    if service.currency != account.currency:
        raise Conflict(
            f"account {account.id} is billed in {account.currency}; service {service.id} is "
            f"priced in {service.currency}"
        )
    if kind is ServiceKind.DATA:
        for existing in await ledger.active_services(uow, account.id):
            if existing.service.kind == ServiceKind.DATA.value:
                raise Conflict(
                    f"account {account.id} already has the data service "
                    f"{existing.service.name!r} (account service {existing.id}): remove the "
                    "existing data service first"
                )
    price = service.price
    if price_override is not None:
        price = parse_amount(price_override, what="price_override")
        if price < 0:
            raise InvalidInput(f"price_override {price} is negative")
    prorates = service.prorates if prorates is None else prorates
    account_service = AccountService(
        account_id=account.id,
        service_id=service.id,
        package_id=package_id,
        quantity=quantity,
        price=price,
        price_override=price_override is not None,
        prorates=prorates,
        added_at=now(),
        addition_prorate_date=day if prorates else None,
    )
    account_service.service = service
    uow.session.add(account_service)
    await uow.session.flush()
    if account.activates:
        await recurring.start_billing(uow, account, account_service, day, actor)
    await uow.emit(
        events.AccountServiceAdded(
            account_id=account.id,
            account_service_id=account_service.id,
            service=service_ref(service),
            quantity=quantity,
            price=price,
            added_at=account_service.added_at,
        ),
        subject=account.id,
    )
    return account_service


async def add_account_service(
    uow: UnitOfWork,
    account_id: int,
    service_id: int,
    *,
    quantity: int = 1,
    price_override: Decimal | None = None,
    prorates: bool | None = None,
    actor: str,
    day: date | None = None,
) -> AccountService:
    """Add a recurring or data service to an account; bill the rest of the current period if
    the account's status activates it. At most one data service at a time."""
    async with uow:
        return await add_to_account(
            uow,
            account_id,
            service_id,
            quantity=quantity,
            price_override=price_override,
            prorates=prorates,
            actor=actor,
            day=day,
        )


async def add_to_account(
    uow: UnitOfWork,
    account_id: int,
    service_id: int,
    *,
    quantity: int = 1,
    price_override: Decimal | None = None,
    prorates: bool | None = None,
    actor: str,
    day: date | None = None,
) -> AccountService:
    """`add_account_service` in the caller's open unit of work (the scheduler's command
    runs it in the consumer's). Every refusal comes before the first write."""
    account = await get_account(uow, account_id, for_update=True)
    service = await get_service(uow, service_id)
    return await _add_service(
        uow,
        account,
        service,
        quantity=quantity,
        price_override=price_override,
        prorates=prorates,
        actor=actor,
        day=day or now().date(),
    )


async def add_package(
    uow: UnitOfWork, account_id: int, package_id: int, *, actor: str, day: date | None = None
) -> list[AccountService]:
    """Add every service of a package to the account, all or none."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        package = await uow.session.get(Package, package_id)
        if package is None:
            raise NotFound(f"package {package_id} not found")
        return [
            await _add_service(
                uow,
                account,
                item.service,
                quantity=item.quantity,
                price_override=item.price_override,
                prorates=None,
                actor=actor,
                day=day or now().date(),
                package_id=package.id,
            )
            for item in package.items
        ]


async def remove_account_service(
    uow: UnitOfWork,
    account_id: int,
    account_service_id: int,
    *,
    actor: str,
    day: date | None = None,
) -> AccountService:
    """Remove a service from an account. A prorating service already billed past today is
    credited for the unused days of the period."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        account_service = await uow.session.get(AccountService, account_service_id)
        if account_service is None or account_service.account_id != account.id:
            raise NotFound(f"account {account_id} has no account service {account_service_id}")
        if account_service.removed_at is not None:
            raise Conflict(f"account service {account_service_id} was already removed")
        return await _remove(uow, account, account_service, actor=actor, day=day or now().date())


async def _remove(
    uow: UnitOfWork,
    account: BillingAccount,
    account_service: AccountService,
    *,
    actor: str,
    day: date,
) -> AccountService:
    account_service.removed_at = now()
    service = account_service.service
    if account_service.prorates:
        await recurring.credit_unused(uow, account, account_service, day, actor=actor)
    await uow.emit(
        events.AccountServiceRemoved(
            account_id=account.id,
            account_service_id=account_service.id,
            service=service_ref(service),
            removed_at=account_service.removed_at,
        ),
        subject=account.id,
    )
    return account_service


async def remove_service_by_catalogue_id(
    uow: UnitOfWork, account_id: int, service_id: int, *, actor: str
) -> AccountService:
    """Remove the account's (newest) active instance of a catalogue service, in the caller's
    open unit of work (the scheduler's command runs it in the consumer's). Every refusal
    comes before the first write."""
    account = await get_account(uow, account_id, for_update=True)
    matches = [
        s for s in await ledger.active_services(uow, account.id) if s.service_id == service_id
    ]
    if not matches:
        raise NotFound(f"account {account_id} has no active service {service_id}")
    return await _remove(uow, account, matches[-1], actor=actor, day=now().date())
