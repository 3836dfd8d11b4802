"""Value objects shared by several events. Events carry them so consumers need no lookups."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class _Value(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StatusRef(_Value):
    """An account status as it was when the event happened."""

    id: int
    name: str
    activates_account: bool


class Address(_Value):
    line1: str
    line2: str | None = None
    city: str
    region: str | None = None
    postal_code: str | None = None
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")


class ContactRef(_Value):
    contact_id: int
    name: str
    email: EmailStr | None = None
    is_primary: bool
    message_categories: list[str] = Field(default_factory=list)


class ServiceKind(StrEnum):
    RECURRING = "recurring"
    DATA = "data"
    ONE_TIME = "one_time"
    ADJUSTMENT = "adjustment"


class ServiceRef(_Value):
    """A catalogue service as it was added to or removed from an account."""

    service_id: int
    name: str
    kind: ServiceKind
    price: Decimal
    currency: str = Field(min_length=3, max_length=3)
    download_kbps: int | None = None
    upload_kbps: int | None = None


class Proration(StrEnum):
    """How a final invoice treats service already billed for the unused part of a period."""

    INHERIT = "inherit"
    NONE = "none"
    CREDIT_UNUSED = "credit_unused"


class ReleasedIp(_Value):
    assignment_id: UUID
    address: str
    pool_id: int | None = None
