"""Billing's handlers: one per command or event. Each owns its unit of work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select

from backhaul_contracts import Envelope
from backhaul_contracts.common import Proration, ServiceKind, ServiceRef
from backhaul_contracts.events import accounts as account_events
from backhaul_contracts.events import billing as events
from backhaul_contracts.topics import BILLING_EVENTS
from backhaul_kit.announce import announce_once
from backhaul_kit.commands import answer_command
from backhaul_kit.errors import Conflict, InvalidInput, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import (
    AccountService,
    BillingAccount,
    CreditApplication,
    Invoice,
    Package,
    PackageItem,
    Service,
    Setting,
    Transaction,
)
from billing.domain import rules
from billing.domain.money import normalise_currency, parse_amount
from billing.domain.rules import ZERO, PaymentMethod, TransactionType
from billing.service_layer import ledger
from billing.service_layer.ledger import InvoiceDraft, get_account, get_invoice, get_service, now

log = structlog.get_logger(__name__)


# -- catalogue ----------------------------------------------------------------------------


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
    async with uow:
        return await uow.get(Package, package_id, not_found=f"package {package_id} not found")


# -- account services ---------------------------------------------------------------------


def service_ref(service: Service) -> ServiceRef:
    return ServiceRef(
        service_id=service.id,
        name=service.name,
        kind=ServiceKind(service.kind),
        price=service.price,
        currency=service.currency,
        download_kbps=service.download_kbps,
        upload_kbps=service.upload_kbps,
    )


async def _start_billing(
    uow: UnitOfWork,
    account: BillingAccount,
    account_service: AccountService,
    day: date,
    actor: str,
) -> None:
    """Charge a recurring service for the rest of the current period (prorated if it
    prorates), unless that period is already billed."""
    period = rules.period_containing(day, account.billing_day)
    if account_service.billed_through is not None and account_service.billed_through >= period.end:
        return
    service = account_service.service
    line = account_service.price * account_service.quantity
    charge = rules.addition_charge(line, period, day, account_service.prorates)
    if charge > 0:
        await ledger.record_debit(
            uow,
            account,
            amount=charge,
            actor=actor,
            service=service,
            account_service=account_service,
            quantity=account_service.quantity,
            period=(day if account_service.prorates else period.start, period.end),
            description=f"{service.name} x{account_service.quantity} "
            f"{day if account_service.prorates else period.start} to {period.end}",
        )
    account_service.billed_through = period.end


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
        await _start_billing(uow, account, account_service, day, actor)
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
        await _credit_unused(uow, account, account_service, day, actor=actor)
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


async def _credit_unused(
    uow: UnitOfWork,
    account: BillingAccount,
    account_service: AccountService,
    day: date,
    *,
    actor: str,
    invoice_line: bool = False,
) -> Transaction | None:
    """Credit the part of the billed periods after `day` (used through `day`)."""
    billed_through = account_service.billed_through
    if billed_through is None or billed_through <= day:
        return None
    period = rules.period_containing(day, account.billing_day)
    line = account_service.price * account_service.quantity
    credit = rules.unused_credit(line, period, day)
    following = period.next()
    while following.end <= billed_through:  # whole periods billed in advance
        credit += rules.round_money(line)
        following = following.next()
    account_service.billed_through = day
    if credit <= 0:
        return None
    rate = await ledger.tax_rate_for(uow, account, account_service.service)
    return await ledger.record_credit(
        uow,
        account,
        type_=TransactionType.DISCOUNT,
        amount=credit,
        tax=rules.tax_on(credit, rate),
        tax_rate=rate,
        actor=actor,
        description=f"Unused {account_service.service.name} from {day + timedelta(days=1)} "
        f"to {billed_through}",
        service_id=account_service.service_id,
        account_service_id=account_service.id,
        quantity=account_service.quantity,
        period_start=day + timedelta(days=1),
        period_end=billed_through,
    )


# -- the account replica (accounts.events.v1) ---------------------------------------------


async def on_account_created(
    event: account_events.AccountCreated, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Start the account's replica: status (and whether it activates), parent, billing day."""
    account = await uow.session.get(BillingAccount, event.account_id)
    if account is None:
        account = BillingAccount(id=event.account_id)
        uow.session.add(account)
    account.name = event.name
    account.status_id = event.status.id
    account.status_name = event.status.name
    account.activates = event.status.activates_account
    account.parent_id = event.parent_account_id
    account.billing_day = event.billing_day
    account.updated_at = now()


async def on_account_updated(
    event: account_events.AccountUpdated, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Follow the account's name, parent and billing day."""
    account = await uow.session.get(BillingAccount, event.account_id)
    if account is None:
        log.warning("account_update_for_unknown_account", account_id=event.account_id)
        return
    account.name = event.name
    account.parent_id = event.parent_account_id
    account.billing_day = event.billing_day
    account.updated_at = now()


async def on_account_status_changed(
    event: account_events.AccountStatusChanged, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Billing follows the status: entering an activating status starts recurring billing
    (the rest of the current period); leaving one stops it (billing runs skip the account)."""
    account = await uow.session.get(BillingAccount, event.account_id)
    if account is None:
        log.warning("status_change_for_unknown_account", account_id=event.account_id)
        return
    was_billed = account.activates
    account.status_id = event.status.id
    account.status_name = event.status.name
    account.activates = event.status.activates_account
    account.parent_id = event.parent_account_id
    account.updated_at = now()
    if account.activates:
        account.disconnected_at = None  # back in service
    if account.activates and not was_billed:
        for account_service in await ledger.active_services(uow, account.id):
            await _start_billing(
                uow,
                account,
                account_service,
                ledger.as_utc(event.changed_at).date(),
                actor=event.changed_by,
            )


async def on_account_disconnected(
    event: account_events.AccountDisconnected, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The final invoice (seed 004), exactly once per disconnection.

    The inbox drops a redelivered event; the unique disconnection id on invoices stops a
    second copy of the same disconnection arriving under another event id. An account with
    no uninvoiced debits still gets its (zero) final invoice: the disconnect's progress on
    accounts waits for this InvoiceIssued.
    """
    existing = await uow.session.scalar(
        select(Invoice.id).where(Invoice.disconnection_id == event.disconnection_id)
    )
    if existing is not None:
        log.info("final_invoice_exists", disconnection_id=str(event.disconnection_id))
        return
    if await uow.session.get(BillingAccount, event.account_id) is None:
        # An account billing never heard of (created before billing was deployed) still
        # gets its (empty) final invoice, or the disconnect would never complete.
        uow.session.add(
            BillingAccount(
                id=event.account_id,
                name=event.account_name,
                status_id=event.status.id,
                status_name=event.status.name,
                activates=event.status.activates_account,
                parent_id=event.parent_account_id,
                billing_day=1,
                updated_at=now(),
            )
        )
        await uow.session.flush()
    account = await get_account(uow, event.account_id, for_update=True)
    account.status_id = event.status.id
    account.status_name = event.status.name
    account.activates = event.status.activates_account
    account.disconnected_at = event.disconnected_at
    account.updated_at = now()
    day = ledger.as_utc(event.disconnected_at).date()
    proration = rules.effective_proration(event.proration, await ledger.global_proration(uow))
    credits: list[Transaction] = []
    for account_service in await ledger.active_services(uow, account.id):
        if ServiceKind(account_service.service.kind) not in rules.RECURRING_KINDS:
            continue
        if proration is Proration.CREDIT_UNUSED:
            credit = await _credit_unused(
                uow, account, account_service, day, actor=event.disconnected_by
            )
            if credit is not None:
                credits.append(credit)
    debits = await ledger.uninvoiced_debits(uow, account.id)
    line_credits = await _fit_credits(uow, account, credits, debits, event.disconnected_by)
    invoice = await ledger.issue_invoice(
        uow,
        account,
        InvoiceDraft(
            debits=debits,
            line_credits=line_credits,
            final=True,
            disconnection_id=event.disconnection_id,
            invoice_date=day,
            proration=proration,
        ),
    )
    log.info(
        "final_invoice_issued",
        account_id=account.id,
        invoice_id=invoice.id,
        total=str(invoice.total),
        proration=proration.value,
        disconnection_id=str(event.disconnection_id),
    )


async def _fit_credits(
    uow: UnitOfWork,
    account: BillingAccount,
    credits: list[Transaction],
    debits: list[Transaction],
    actor: str,
) -> list[Transaction]:
    """Credits shown as lines of an invoice may not take it below zero: the excess is split
    off as an ordinary available credit, to be applied to what the account still owes."""
    room = sum((ledger.total_of(d) for d in debits), ZERO)
    lines: list[Transaction] = []
    for credit in credits:
        total = ledger.total_of(credit)
        if total <= room:
            lines.append(credit)
            room -= total
            continue
        if room > 0:
            credit.tax = ZERO  # the split keeps the total exact; tax detail stays on the debit
            credit.amount = room
            lines.append(credit)
            excess = total - room
            room = ZERO
        else:
            credit.amount, credit.tax = total, ZERO
            continue  # entirely available credit
        await ledger.record_credit(
            uow,
            account,
            type_=TransactionType.DISCOUNT,
            amount=excess,
            actor=actor,
            description=f"{credit.description} (beyond the final invoice)",
            service_id=credit.service_id,
            account_service_id=credit.account_service_id,
        )
    await uow.session.flush()
    return lines


# -- commands from the scheduler -----------------------------------------------------------


async def on_add_service_command(
    command: events.AddAccountService, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The scheduler's AddAccountService: done like the HTTP call, answered either way."""

    async def carry_out() -> dict[str, Any]:
        added = await add_account_service(
            uow,
            command.account_id,
            command.service_id,
            quantity=command.quantity,
            price_override=command.price_override,
            actor=command.requested_by,
        )
        return {"account_service_id": added.id, "service_id": added.service_id}

    await answer_command(uow, command, envelope, topic=BILLING_EVENTS, carry_out=carry_out)


async def remove_service_by_catalogue_id(
    uow: UnitOfWork, account_id: int, service_id: int, *, actor: str
) -> AccountService:
    """Remove the account's (newest) active instance of a catalogue service."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        matches = [
            s for s in await ledger.active_services(uow, account.id) if s.service_id == service_id
        ]
        if not matches:
            raise NotFound(f"account {account_id} has no active service {service_id}")
        return await _remove(uow, account, matches[-1], actor=actor, day=now().date())


async def on_remove_service_command(
    command: events.RemoveAccountService, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The scheduler's RemoveAccountService: done like the HTTP call, answered either way."""

    async def carry_out() -> dict[str, Any]:
        removed = await remove_service_by_catalogue_id(
            uow, command.account_id, command.service_id, actor=command.requested_by
        )
        return {"account_service_id": removed.id, "service_id": removed.service_id}

    await answer_command(uow, command, envelope, topic=BILLING_EVENTS, carry_out=carry_out)


# -- transactions --------------------------------------------------------------------------


async def add_one_time_debit(
    uow: UnitOfWork,
    account_id: int,
    service_id: int,
    *,
    quantity: int = 1,
    amount: Decimal | None = None,
    description: str | None = None,
    actor: str,
) -> Transaction:
    """A one-time transaction of any service, or an adjustment (negative: a discount)."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        service = await get_service(uow, service_id)
        if quantity < 1:
            raise InvalidInput(f"quantity {quantity} must be at least 1")
        unit = parse_amount(amount, what="amount") if amount is not None else service.price
        if unit < 0 and service.kind != ServiceKind.ADJUSTMENT.value:
            raise InvalidInput(f"amount {unit} is negative: only adjustments can be")
        line = rules.round_money(unit * quantity)
        text = description or f"{service.name} x{quantity}"
        if line < 0:
            return await ledger.record_credit(
                uow,
                account,
                type_=TransactionType.DISCOUNT,
                amount=-line,
                description=text,
                actor=actor,
                service_id=service.id,
                quantity=quantity,
            )
        return await ledger.record_debit(
            uow,
            account,
            amount=line,
            description=text,
            actor=actor,
            service=service,
            quantity=quantity,
        )


async def add_discount(
    uow: UnitOfWork, account_id: int, amount: Decimal, description: str, *, actor: str
) -> Transaction:
    """A credit given to the account; it waits to be applied to an invoice."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        value = parse_amount(amount)
        if value <= 0:
            raise InvalidInput(f"amount {value} must be positive")
        credit = await ledger.record_credit(
            uow,
            account,
            type_=TransactionType.DISCOUNT,
            amount=value,
            description=description,
            actor=actor,
        )
        await ledger.apply_available_credits(uow, account.id)
        return credit


def _refuse_card_numbers(method: PaymentMethod, token: str | None) -> None:
    if method in rules.TOKENISED_METHODS:
        if not token:
            raise InvalidInput(f"a {method.value} payment needs the payment processor's token")
        digits = token.replace(" ", "").replace("-", "")
        if digits.isdigit() and len(digits) >= 8:
            raise InvalidInput(
                "token looks like a card or account number: send the processor's token, "
                "never the number"
            )
    elif token:
        raise InvalidInput(f"a {method.value} payment has no token")


async def receive_payment(
    uow: UnitOfWork,
    account_id: int,
    amount: Decimal,
    method: PaymentMethod,
    *,
    actor: str,
    token: str | None = None,
    reference: str | None = None,
    invoice_id: int | None = None,
) -> Transaction:
    """Record a payment and apply it: to the named invoice first, then to the account's open
    invoices oldest first (never frozen ones); what is left is an available credit."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        value = parse_amount(amount)
        if value <= 0:
            raise InvalidInput(f"amount {value} must be positive")
        _refuse_card_numbers(method, token)
        target = None
        if invoice_id is not None:
            target = await get_invoice(uow, invoice_id)
            if target.bill_to_account_id != account.id:
                raise Conflict(f"invoice {invoice_id} is not billed to account {account_id}")
            ledger.refuse_if_locked(target, "pay it")
        payment = await ledger.record_credit(
            uow,
            account,
            type_=TransactionType.PAYMENT,
            amount=value,
            description=f"{method.value.replace('_', ' ').title()} payment",
            actor=actor,
            payment_method=method.value,
            payment_token=token,
            reference=reference,
        )
        if target is not None:
            await ledger.apply_available_credits(uow, account.id, only=target)
        await ledger.apply_available_credits(uow, account.id)
        await uow.emit(
            events.PaymentReceived(
                account_id=account.id,
                payment_id=payment.id,
                amount=value,
                currency=payment.currency,
                method=method.value,
                received_at=payment.created_at,
            ),
            subject=account.id,
        )
        await _evaluate_delinquency(uow, account, now().date())
        return payment


async def reverse_transaction(
    uow: UnitOfWork, transaction_id: int, *, actor: str, reason: str | None = None
) -> Transaction:
    """Reverse a debit (a discount for its amount pays down its invoice) or a payment (its
    credit is taken off every invoice it paid)."""
    async with uow:
        original = await uow.session.get(Transaction, transaction_id)
        if original is None:
            raise NotFound(f"transaction {transaction_id} not found")
        account = await get_account(uow, original.account_id, for_update=True)
        if original.reversed:
            raise Conflict(f"transaction {transaction_id} is already reversed")
        kind = TransactionType(original.type)
        note = f": {reason}" if reason else ""
        invoice = (
            await uow.session.get(Invoice, original.invoice_id) if original.invoice_id else None
        )
        if kind is TransactionType.DEBIT:
            if invoice is not None:
                ledger.refuse_if_locked(invoice, "reverse its debits")
            original.reversed = True
            reversal = await ledger.record_credit(
                uow,
                account,
                type_=TransactionType.DISCOUNT,
                amount=original.amount,
                tax=original.tax,
                description=f"Reversal of {original.description}{note}",
                actor=actor,
                reverses_id=original.id,
                service_id=original.service_id,
            )
            if invoice is not None:
                await ledger.apply_available_credits(uow, invoice.bill_to_account_id, only=invoice)
            return reversal
        if kind is TransactionType.PAYMENT:
            await ledger.take_back(uow, original, await ledger.applied_from(uow, original.id))
            original.reversed = True
            reversal = await ledger.record_credit(
                uow,
                account,
                type_=TransactionType.PAYMENT_REVERSAL,
                amount=original.amount,
                description=f"Reversal of {original.description}{note}",
                actor=actor,
                reverses_id=original.id,
                payment_method=original.payment_method,
            )
            await _evaluate_delinquency(uow, account, now().date())
            return reversal
        raise Conflict(f"a {kind.value} cannot be reversed; only debits and payments can")


async def edit_debit_description(
    uow: UnitOfWork, transaction_id: int, description: str, *, actor: str
) -> Transaction:
    """Change a debit's description (seed 003: Reverse > Edit); not on a locked invoice."""
    async with uow:
        debit = await uow.session.get(Transaction, transaction_id)
        if debit is None:
            raise NotFound(f"transaction {transaction_id} not found")
        if debit.type != TransactionType.DEBIT.value:
            raise Conflict(f"only a debit's description can be edited, not a {debit.type}'s")
        if debit.invoice_id is not None:
            ledger.refuse_if_locked(await get_invoice(uow, debit.invoice_id), "edit its debits")
        log.info(
            "debit_description_changed",
            transaction_id=debit.id,
            actor=actor,
            previous=debit.description,
            description=description,
        )
        debit.description = description
        return debit


# -- invoices ------------------------------------------------------------------------------


async def create_manual_invoice(uow: UnitOfWork, account_id: int, *, actor: str) -> Invoice:
    """Invoice every uninvoiced debit of the account now."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        debits = await ledger.uninvoiced_debits(uow, account.id)
        if not debits:
            raise Conflict(f"account {account_id} has no uninvoiced debits to invoice")
        return await ledger.issue_invoice(uow, account, InvoiceDraft(debits=debits, manual=True))


async def edit_invoice(
    uow: UnitOfWork,
    invoice_id: int,
    *,
    frozen: bool | None,
    message: str | None,
    message_given: bool,
) -> Invoice:
    """Freeze or unfreeze an invoice, or change its printed message (not while frozen)."""
    async with uow:
        invoice = await get_invoice(uow, invoice_id)
        if invoice.void:
            raise Conflict(f"invoice {invoice.number} is void and locked")
        if message_given:
            if invoice.frozen and frozen is not False:
                raise Conflict(f"invoice {invoice.number} is frozen: unfreeze it to edit it")
            invoice.message = message
        if frozen is not None:
            invoice.frozen = frozen
        if frozen is False:
            await ledger.apply_available_credits(uow, invoice.bill_to_account_id, only=invoice)
        return invoice


async def void_invoice(uow: UnitOfWork, invoice_id: int, *, actor: str) -> Invoice:
    """Void: take off every applied credit, reverse every debit with a discount that zeroes
    the invoice, then lock it.

    Credits printed on the invoice (a final invoice's unused-days credit) are not undone:
    they pay back service billed on an earlier invoice, which the void does not touch, so
    what of the reversals they leave over stays an available credit of the account."""
    async with uow:
        invoice = await get_invoice(uow, invoice_id)
        ledger.refuse_if_locked(invoice, "void it")
        account = await get_account(uow, invoice.account_id, for_update=True)
        moment = now()
        for application in (
            await uow.session.scalars(
                select(CreditApplication).where(
                    CreditApplication.invoice_id == invoice.id,
                    CreditApplication.removed_at.is_(None),
                )
            )
        ).all():
            application.removed_at = moment
        lines = (
            await uow.session.scalars(
                select(Transaction).where(Transaction.invoice_id == invoice.id)
            )
        ).all()
        remaining = invoice.total
        for debit in lines:
            if debit.type != TransactionType.DEBIT.value:
                continue
            if debit.reversed:
                reversal = await uow.session.scalar(
                    select(Transaction).where(Transaction.reverses_id == debit.id)
                )
            else:
                debit.reversed = True
                reversal = await ledger.record_credit(
                    uow,
                    account,
                    type_=TransactionType.DISCOUNT,
                    amount=debit.amount,
                    tax=debit.tax,
                    description=f"Reversal of {debit.description} (invoice void)",
                    actor=actor,
                    reverses_id=debit.id,
                    service_id=debit.service_id,
                )
            if reversal is None or remaining <= 0:
                continue
            wanted = min(ledger.total_of(reversal), remaining)
            amount = min(await ledger.available_of(uow, reversal), wanted)
            if amount < wanted:
                # The debit was reversed earlier and its reversal has since paid other
                # invoices: it comes back here, where its debit is, and those invoices
                # reopen (to be paid below from whatever credit the void frees).
                amount += await ledger.take_back(uow, reversal, wanted - amount)
            if amount > 0:
                ledger.apply(uow, reversal, invoice, amount)
                remaining -= amount
        invoice.void = True
        invoice.voided_at = moment
        invoice.voided_by = actor
        invoice.delinquent = False
        await uow.session.flush()
        # Payments taken off the void invoice go on to pay whatever else is open.
        await ledger.apply_available_credits(uow, invoice.bill_to_account_id)
        await uow.emit(
            events.InvoiceVoided(
                account_id=account.id,
                invoice_id=invoice.id,
                number=invoice.number or "",
                voided_at=moment,
                voided_by=actor,
            ),
            subject=account.id,
        )
        payer = await get_account(uow, invoice.bill_to_account_id)
        await _evaluate_delinquency(uow, payer, moment.date())
        return invoice


async def apply_credits(
    uow: UnitOfWork, invoice_id: int, amount: Decimal | None, *, actor: str
) -> Invoice:
    """Apply the payer's available credits to one invoice (all that fits, or `amount`)."""
    async with uow:
        invoice = await get_invoice(uow, invoice_id)
        ledger.refuse_if_locked(invoice, "apply credits to it")
        await get_account(uow, invoice.bill_to_account_id, for_update=True)
        limit = None
        if amount is not None:
            limit = parse_amount(amount)
            if limit <= 0:
                raise InvalidInput(f"amount {limit} must be positive")
            available = sum(
                (
                    left
                    for _, left in await ledger.available_credits(uow, invoice.bill_to_account_id)
                ),
                ZERO,
            )
            remaining = await ledger.remaining_on(uow, invoice)
            if limit > available:
                raise Conflict(f"only {available} of credits are available, not {limit}")
            if limit > remaining:
                raise Conflict(f"invoice {invoice.number} has only {remaining} remaining")
        await ledger.apply_available_credits(
            uow, invoice.bill_to_account_id, only=invoice, limit=limit
        )
        return invoice


async def delete_invoice(uow: UnitOfWork, invoice_id: int, *, actor: str) -> None:
    """Delete a manually created invoice dated after the accounting period's close; its
    debits become uninvoiced again and its credits available."""
    async with uow:
        invoice = await get_invoice(uow, invoice_id)
        if not invoice.manual:
            raise Conflict(f"invoice {invoice.number} was not created manually: void it instead")
        ledger.refuse_if_locked(invoice, "delete it")
        close = await ledger.setting(uow, rules.SETTING_PERIOD_CLOSE)
        if close and invoice.invoice_date <= date.fromisoformat(close):
            raise Conflict(
                f"invoice {invoice.number} is dated {invoice.invoice_date}, not after the "
                f"accounting period close {close}"
            )
        for application in (
            await uow.session.scalars(
                select(CreditApplication).where(CreditApplication.invoice_id == invoice.id)
            )
        ).all():
            await uow.session.delete(application)
        for line in (
            await uow.session.scalars(
                select(Transaction).where(Transaction.invoice_id == invoice.id)
            )
        ).all():
            line.invoice_id = None
        await uow.session.flush()
        await uow.session.delete(invoice)
        log.info("invoice_deleted", invoice_id=invoice_id, actor=actor)


async def link_invoice(
    uow: UnitOfWork, parent_invoice_id: int, child_invoice_id: int, *, link: bool
) -> Invoice:
    """Link (or unlink) a child account's invoice to its parent's: the repair the seed allows
    when the billing process linked wrongly."""
    async with uow:
        parent_invoice = await get_invoice(uow, parent_invoice_id)
        child_invoice = await get_invoice(uow, child_invoice_id)
        child = await get_account(uow, child_invoice.account_id)
        if child.parent_id != parent_invoice.account_id:
            raise Conflict(
                f"account {child.id} is not a child of account {parent_invoice.account_id}"
            )
        ledger.refuse_if_locked(child_invoice, "relink it")
        if await ledger.paid_on(uow, child_invoice.id) > 0:
            # Its payer's credits pay it: moving it to another payer would strand them.
            raise Conflict(
                f"invoice {child_invoice.number} already has credits applied: it can only be "
                "relinked while nothing is paid on it"
            )
        if link:
            child_invoice.parent_invoice_id = parent_invoice.id
            child_invoice.bill_to_account_id = parent_invoice.account_id
        else:
            if child_invoice.parent_invoice_id != parent_invoice.id:
                raise Conflict(
                    f"invoice {child_invoice.number} is not linked to {parent_invoice.number}"
                )
            child_invoice.parent_invoice_id = None
            child_invoice.bill_to_account_id = child.id
        return child_invoice


# -- delinquency ---------------------------------------------------------------------------


async def _evaluate_delinquency(uow: UnitOfWork, account: BillingAccount, today: date) -> None:
    """Mark invoices past due plus the grace period; announce the account's change."""
    grace = int(await ledger.setting(uow, rules.SETTING_GRACE_DAYS))
    invoices = (
        await uow.session.scalars(
            select(Invoice).where(Invoice.bill_to_account_id == account.id, Invoice.void.is_(False))
        )
    ).all()
    late: list[int] = []
    for invoice in invoices:
        remaining = await ledger.remaining_on(uow, invoice)
        state = rules.invoice_state(
            void=False,
            remaining=remaining,
            due_date=invoice.due_date,
            today=today,
            grace_days=grace,
        )
        invoice.delinquent = state is rules.InvoiceState.DELINQUENT
        if invoice.delinquent:
            late.append(invoice.id)
    delinquent = bool(late)
    if delinquent != account.delinquent:
        account.delinquent = delinquent
        await uow.emit(
            events.AccountDelinquencyChanged(
                account_id=account.id, delinquent=delinquent, invoice_ids=late, changed_at=now()
            ),
            subject=account.id,
        )


# -- billing configuration and settings ----------------------------------------------------


async def configure_account(
    uow: UnitOfWork,
    account_id: int,
    *,
    tax_exempt: bool | None,
    tax_rate: Decimal | None,
    clear_tax_rate: bool,
) -> BillingAccount:
    """The account's own billing configuration: tax exemption and a tax-rate override."""
    async with uow:
        account = await get_account(uow, account_id, for_update=True)
        if tax_exempt is not None:
            account.tax_exempt = tax_exempt
        if clear_tax_rate:
            account.tax_rate = None
        elif tax_rate is not None:
            account.tax_rate = rules.parse_rate(tax_rate)
        return account


async def load_settings(uow: UnitOfWork) -> dict[str, str]:
    async with uow:
        return {key: await ledger.setting(uow, key) for key in rules.DEFAULT_SETTINGS}


async def update_settings(
    uow: UnitOfWork, changes: dict[str, str], *, actor: str
) -> dict[str, str]:
    """Change global billing settings (validated by the API's schema)."""
    async with uow:
        for key, value in changes.items():
            if key not in rules.DEFAULT_SETTINGS:
                raise InvalidInput(f"unknown setting {key!r}")
            row = await uow.session.get(Setting, key)
            if row is None:
                uow.session.add(Setting(key=key, value=value))
            else:
                row.value = value
        log.info("billing_settings_changed", actor=actor, **changes)
    return await load_settings(uow)
