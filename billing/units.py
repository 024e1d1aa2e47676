"""Money units and their conversions, with the rounding direction explicit.

µUSD (balances), credit units (CU; display and packs; CREDIT_UNITS_PER_USD,
default 100 per USD) and µUSDC (on-chain amounts). Estimates round up (a hold
must cover the worst case), actual costs round down (never bill a fraction
the customer did not use).
"""

from __future__ import annotations

import enum
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django.conf import settings

MICRO = 1_000_000


class Rounding(enum.StrEnum):
    CEIL = "ceil"
    FLOOR = "floor"


def divide(numerator: int, denominator: int, rounding: Rounding) -> int:
    if numerator < 0 or denominator <= 0:
        raise ValueError("amounts are non-negative and denominators positive")
    if rounding is Rounding.CEIL:
        return -(-numerator // denominator)
    return numerator // denominator


def micro_usd_to_cu(amount: int, *, rounding: Rounding, cu_per_usd: int | None = None) -> int:
    """µUSD → credit units: 50_000 → 5 either way; 50_001 → 6 (ceil) / 5 (floor)."""
    rate = cu_per_usd or settings.CREDIT_UNITS_PER_USD
    return divide(amount * rate, MICRO, rounding)


def cu_to_micro_usd(units: int, *, rounding: Rounding, cu_per_usd: int | None = None) -> int:
    rate = cu_per_usd or settings.CREDIT_UNITS_PER_USD
    return divide(units * MICRO, rate, rounding)


def micro_usdc_to_micro_usd(amount: int, *, rounding: Rounding, usd_per_usdc: Decimal | None = None) -> int:
    """On-chain µUSDC → µUSD at the frozen USD/USDC rate."""
    rate = usd_per_usdc if usd_per_usdc is not None else settings.USD_USDC_RATE
    value = Decimal(amount) * rate
    return int(value.to_integral_value(rounding=ROUND_CEILING if rounding is Rounding.CEIL else ROUND_FLOOR))


def micro_usd_to_micro_usdc(amount: int, *, rounding: Rounding, usd_per_usdc: Decimal | None = None) -> int:
    rate = usd_per_usdc if usd_per_usdc is not None else settings.USD_USDC_RATE
    value = Decimal(amount) / rate
    return int(value.to_integral_value(rounding=ROUND_CEILING if rounding is Rounding.CEIL else ROUND_FLOOR))


# How each denomination reads in the admin and in statements: (unit, decimals).
DISPLAY_UNITS = {"micro_usd": ("USD", 6), "micro_usdc": ("USDC", 6), "credit_unit": ("CU", 0), "cents": ("USD", 2)}


def _split(amount: int, decimals: int) -> tuple[str, int, str]:
    """Sign, whole units and the fraction's digits of an integer of 10^-decimals units (exact)."""
    whole, fraction = divmod(abs(amount), 10**decimals)
    return ("-" if amount < 0 else ""), whole, (f".{fraction:0{decimals}d}" if decimals else "")


def decimal_string(amount: int, decimals: int = 6) -> str:
    """A plain decimal a spreadsheet reads as a number: -700 µUSD → "-0.000700" (CSV cells)."""
    sign, whole, fraction = _split(amount, decimals)
    return f"{sign}{whole}{fraction}"


def format_amount(amount: int | None, denomination: str = "micro_usd") -> str:
    """An integer amount as money, exactly (no float): 1_234_500 µUSD → "1.234500 USD"; -700 → "-0.000700 USD"."""
    if amount is None:
        return "—"
    unit, decimals = DISPLAY_UNITS[denomination]
    sign, whole, fraction = _split(amount, decimals)
    return f"{sign}{whole:,}{fraction} {unit}"
