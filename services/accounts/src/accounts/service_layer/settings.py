"""Accounts' settings: the status a disconnect moves an account to (seed 004)."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import ColumnElement, Integer, and_, cast, or_, select

from accounts.adapters.tables import AccountStatus, Setting
from accounts.service_layer.records import get_status, status_by_name
from backhaul_kit.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

DISCONNECT_STATUS_SETTING = "disconnect_status_id"


def configured_disconnect_status(status: Any) -> ColumnElement[bool]:
    """A condition true of the disconnect status only (`status`: AccountStatus or an alias
    of it): the configured one, or Inactive when none is configured. It lets a query that
    needs the disconnect status join it instead of reading the setting first."""
    configured = (
        select(cast(Setting.value, Integer))
        .where(Setting.key == DISCONNECT_STATUS_SETTING)
        .scalar_subquery()
    )
    return or_(status.id == configured, and_(configured.is_(None), status.name == "Inactive"))


async def disconnect_status(uow: UnitOfWork) -> AccountStatus:
    """The configured disconnect status, or Inactive when none is configured."""
    setting = await uow.session.get(Setting, DISCONNECT_STATUS_SETTING)
    if setting is not None:
        return await get_status(uow, int(setting.value))
    return await status_by_name(uow, "Inactive")


async def get_disconnect_status(uow: UnitOfWork) -> AccountStatus:
    """The status disconnected accounts move to."""
    async with uow:
        return await disconnect_status(uow)


async def set_disconnect_status(uow: UnitOfWork, status_id: int, *, actor: str) -> AccountStatus:
    """Choose the status disconnected accounts move to (seed 004: Billing Settings)."""
    async with uow:
        status = await get_status(uow, status_id)
        setting = await uow.session.get(Setting, DISCONNECT_STATUS_SETTING)
        if setting is None:
            uow.session.add(Setting(key=DISCONNECT_STATUS_SETTING, value=str(status.id)))
        else:
            setting.value = str(status.id)
        log.info("disconnect_status_set", status=status.name, actor=actor)
        return status
