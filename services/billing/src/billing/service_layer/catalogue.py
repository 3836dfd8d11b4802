"""The service catalogue: services, packages, and announcing them (ServiceDefined).

API-called: each handler owns its unit of work."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from backhaul_contracts.common import ServiceKind, ServiceRef
from backhaul_contracts.events import billing as events
from backhaul_kit.announce import announce_once
from backhaul_kit.clock import now
from backhaul_kit.errors import Conflict, InvalidInput
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import Package, PackageItem, Service, Setting
from billing.domain import rules
from billing.domain.money import normalise_currency, parse_amount
from billing.service_layer.ledger import get_service

# Set once every service has been announced; a new value would announce them all again.
CATALOGUE_ANNOUNCED_SETTING = "service_catalogue_announced"


async def announce_service(uow: UnitOfWork, service: Service) -> None:
    """Stage ServiceDefined: the catalogue service as it now is (written, so it has its id)."""
    await uow.session.flush()
    event = events.ServiceDefined(
        **service_ref(service).model_dump(),
        prorates=service.prorates,
        tax_rate=service.tax_rate,
        defined_at=now(),
    )
    await uow.emit(event, subject=event.subject)


async def announce_services(uow: UnitOfWork) -> int:
    """Publish ServiceDefined for every catalogue service, once per database; returns how many.

    Services older than the catalogue events were written without one: this is how other
    services' replicas (the scheduler's) learn of them."""
    return await announce_once(
        uow,
        select(Service).order_by(Service.id),
        announce_service,
        marker=Setting,
        key=CATALOGUE_ANNOUNCED_SETTING,
    )


@dataclass(frozen=True)
class NewService:
    """A catalogue service to create (as the API received it)."""

    name: str
    kind: ServiceKind
    price: Decimal
    currency: str = "USD"
    download_kbps: int | None = None
    upload_kbps: int | None = None
    prorates: bool = True
    tax_rate: Decimal | None = None


async def create_service(uow: UnitOfWork, new: NewService) -> Service:
    """Add a catalogue service. Only adjustments may have a negative price; a data service
    needs its speeds. Publishes ServiceDefined."""
    async with uow:
        price = parse_amount(new.price, what="price")
        if price < 0 and new.kind is not ServiceKind.ADJUSTMENT:
            raise InvalidInput(f"price {price} is negative: only adjustment services can be")
        if new.kind is ServiceKind.DATA and (new.download_kbps is None or new.upload_kbps is None):
            raise InvalidInput("a data service needs download_kbps and upload_kbps")
        if new.kind is not ServiceKind.DATA and (new.download_kbps or new.upload_kbps):
            raise InvalidInput(f"only data services have speeds, not a {new.kind.value} service")
        taken = await uow.session.scalar(select(Service.id).where(Service.name == new.name))
        if taken is not None:
            raise Conflict(f"a service named {new.name!r} already exists (service {taken})")
        service = Service(
            name=new.name,
            kind=new.kind.value,
            price=price,
            currency=normalise_currency(new.currency),
            download_kbps=new.download_kbps,
            upload_kbps=new.upload_kbps,
            prorates=new.prorates,
            tax_rate=rules.parse_rate(new.tax_rate) if new.tax_rate is not None else None,
            created_at=now(),
        )
        uow.session.add(service)
        await announce_service(uow, service)
        return service


@dataclass(frozen=True)
class NewPackageItem:
    """One service of a new package: how many, and an optional price of its own."""

    service_id: int
    quantity: int = 1
    price_override: Decimal | None = None


async def create_package(uow: UnitOfWork, name: str, items: list[NewPackageItem]) -> Package:
    """A named bundle of catalogue services, added to an account in one step."""
    async with uow:
        if not items:
            raise InvalidInput("a package needs at least one service")
        if await uow.session.scalar(select(Package.id).where(Package.name == name)) is not None:
            raise Conflict(f"a package named {name!r} already exists")
        package = Package(name=name)
        for item in items:
            await get_service(uow, item.service_id)
            override = (
                parse_amount(item.price_override, what="price_override")
                if item.price_override is not None
                else None
            )
            if override is not None and override < 0:
                raise InvalidInput(f"price_override {override} is negative")
            package.items.append(
                PackageItem(
                    service_id=item.service_id, quantity=item.quantity, price_override=override
                )
            )
        uow.session.add(package)
        await uow.session.flush()
        package_id = package.id
        uow.session.expunge(package)
    return await load_package(uow, package_id)


async def load_package(uow: UnitOfWork, package_id: int) -> Package:
    """A package with its items, read fresh (create_package answers with it)."""
    async with uow:
        return await uow.get(Package, package_id, not_found=f"package {package_id} not found")


def service_ref(service: Service) -> ServiceRef:
    """The catalogue service as the events carry it."""
    return ServiceRef(
        service_id=service.id,
        name=service.name,
        kind=ServiceKind(service.kind),
        price=service.price,
        currency=service.currency,
        download_kbps=service.download_kbps,
        upload_kbps=service.upload_kbps,
    )
