"""Transactions: one-time debits, discounts, payments, reversals and debit edits.

API-called: each handler owns its unit of work."""

from __future__ import annotations

from decimal import Decimal

import structlog

from backhaul_contracts.common import ServiceKind
from backhaul_contracts.events import billing as events
from backhaul_kit.clock import now
from backhaul_kit.errors import Conflict, InvalidInput, NotFound
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import Invoice, Transaction
from billing.domain import rules
from billing.domain.money import parse_amount
from billing.domain.rules import PaymentMethod, TransactionType
from billing.service_layer import ledger
from billing.service_layer.delinquency import evaluate_delinquency
from billing.service_layer.ledger import get_account, get_invoice, get_service

log = structlog.get_logger(__name__)


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
        await evaluate_delinquency(uow, account, now().date())
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
            await evaluate_delinquency(uow, account, now().date())
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
