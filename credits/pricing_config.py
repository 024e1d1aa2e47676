"""Parse model pricing (pure Python: settings import it before Django is up).

Prices are micro-USD per token and may be fractional (gpt-4.1-mini input is
0.4 µUSD/token), so they are kept as integers of micro-USD per *million*
tokens: exact, and integer all the way to the rounding step.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

PER_MILLION = 1_000_000

# µUSD per token (input, output), from the reference notes §4.
DEFAULT_MODEL_PRICING: dict[str, tuple[str, str]] = {
    "claude-sonnet-4": ("3", "15"),
    "claude-haiku-4": ("1", "5"),
    "gpt-4.1": ("2", "8"),
    "gpt-4.1-mini": ("0.4", "1.6"),
}


class PricingConfigError(ValueError):
    pass


def _per_million(model: str, side: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise PricingConfigError(f"{model}.{side} must be a number of µUSD per token")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise PricingConfigError(f"{model}.{side} is not a number: {value!r}") from None
    scaled = price * PER_MILLION
    if not price.is_finite() or price < 0 or scaled != scaled.to_integral_value():
        raise PricingConfigError(f"{model}.{side} must be >= 0 with at most 6 decimals, got {value!r}")
    return int(scaled)


def parse_model_pricing(raw: Any) -> dict[str, tuple[int, int]]:
    """``{"model": {"input": "0.4", "output": "1.6"}}`` -> µUSD per million tokens."""
    if not isinstance(raw, dict) or not raw:
        raise PricingConfigError("model pricing must be a non-empty JSON object")
    pricing: dict[str, tuple[int, int]] = {}
    for model, prices in raw.items():
        if not isinstance(model, str) or not model or len(model) > 100:
            raise PricingConfigError(f"invalid model name {model!r}")
        if not isinstance(prices, dict) or set(prices) != {"input", "output"}:
            raise PricingConfigError(f"{model} needs exactly 'input' and 'output' prices")
        pricing[model] = (
            _per_million(model, "input", prices["input"]),
            _per_million(model, "output", prices["output"]),
        )
    return pricing


def default_pricing() -> dict[str, tuple[int, int]]:
    return parse_model_pricing({m: {"input": i, "output": o} for m, (i, o) in DEFAULT_MODEL_PRICING.items()})
