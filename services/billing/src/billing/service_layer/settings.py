"""Billing configuration: an account's own (tax exemption, tax rate) and the global
settings (proration, due days, grace days, period close, default tax rate).

API-called: each handler owns its unit of work."""

from __future__ import annotations

from decimal import Decimal

import structlog

from backhaul_kit.errors import InvalidInput
from backhaul_kit.unit_of_work import UnitOfWork
from billing.adapters.tables import BillingAccount, Setting
from billing.domain import rules
from billing.service_layer import ledger
from billing.service_layer.ledger import get_account

log = structlog.get_logger(__name__)


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
    """Every global billing setting: its stored value, else its default."""
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
        ledger.forget_settings(uow)
        log.info("billing_settings_changed", actor=actor, **changes)
    return await load_settings(uow)
