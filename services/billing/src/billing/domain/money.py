"""Money: Decimal amounts with a currency, and the one place amounts are rounded.

Every amount billing stores or shows is a whole number of minor units (cents): a
computation (a proration, a tax) produces an unrounded Decimal, and `round_money` is the
only way it becomes an amount. Rounding is half-up, as on a customer's paper bill.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from backhaul_kit.errors import InvalidInput

CENT = Decimal("0.01")
MINOR_UNITS = 2  # every supported currency has cents; a JPY catalogue would need 0
MAX_AMOUNT = Decimal("1000000000000")  # far below what integer cents can hold


def round_money(value: Decimal) -> Decimal:
    """Round an unrounded amount to cents, half up (the only rounding rule of billing)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def parse_amount(value: Decimal | str | int, *, what: str = "amount") -> Decimal:
    """An amount given by a caller: finite and with at most two decimals (never rounded)."""
    try:
        amount = Decimal(value)
    except (ArithmeticError, ValueError, TypeError):
        raise InvalidInput(f"{what} {value!r} is not a decimal number") from None
    if not amount.is_finite():
        raise InvalidInput(f"{what} must be a finite number")
    if amount.copy_abs().compare(MAX_AMOUNT) >= 0:
        raise InvalidInput(f"{what} {value} is too large")
    if amount != amount.quantize(CENT, rounding=ROUND_HALF_UP):
        raise InvalidInput(f"{what} {value} has more than {MINOR_UNITS} decimals")
    return amount.quantize(CENT)


def to_cents(amount: Decimal) -> int:
    """Storage form of an amount; refuses anything not already rounded to cents."""
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of cents: round it first")
    return int(cents)


def from_cents(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-MINOR_UNITS)


def normalise_currency(code: str) -> str:
    code = code.strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise InvalidInput(f"currency {code!r} is not an ISO 4217 code")
    return code


@dataclass(frozen=True)
class Money:
    """An amount in a currency. Arithmetic refuses to mix currencies."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", round_money(Decimal(self.amount)))

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise InvalidInput(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)
