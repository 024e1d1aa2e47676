"""Per-model prices and cost calculations (integer µUSD; explicit rounding)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from billing.units import Rounding, divide
from credits.errors import UnknownModel
from credits.pricing_config import PER_MILLION


@dataclass(frozen=True)
class ModelPrice:
    model: str
    input_per_million: int  # µUSD per 1,000,000 input tokens
    output_per_million: int


def model_prices() -> list[ModelPrice]:
    pricing: dict[str, tuple[int, int]] = settings.MODEL_PRICING
    return [ModelPrice(model, i, o) for model, (i, o) in sorted(pricing.items())]


def model_names() -> list[str]:
    """The models finn has prices for (the API schema lists them)."""
    return sorted(settings.MODEL_PRICING)


def model_price(model: str) -> ModelPrice:
    pricing: dict[str, tuple[int, int]] = settings.MODEL_PRICING
    if model not in pricing:
        known = sorted(pricing)
        raise UnknownModel(f"unknown model {model!r}; known: {', '.join(known)}", known_models=known)
    i, o = pricing[model]
    return ModelPrice(model, i, o)


def _tokens_cost(tokens: int, per_million: int, rounding: Rounding) -> int:
    return divide(tokens * per_million, PER_MILLION, rounding)


def estimate_reserve_cost(*, model: str, input_tokens: int, max_output_tokens: int) -> int:
    """The hold for a request: each side rounded up (sonnet 1000/500 → 10_500)."""
    return estimate_cost_at(model_price(model), input_tokens=input_tokens, max_output_tokens=max_output_tokens)


def estimate_cost_at(price: ModelPrice, *, input_tokens: int, max_output_tokens: int) -> int:
    return _tokens_cost(input_tokens, price.input_per_million, Rounding.CEIL) + _tokens_cost(
        max_output_tokens, price.output_per_million, Rounding.CEIL
    )


def compute_actual_cost(*, model: str, input_tokens: int, output_tokens: int) -> int:
    """What a finished request costs: each side rounded down (gpt-4.1-mini 1000/300 → 880)."""
    return actual_cost_at(model_price(model), input_tokens=input_tokens, output_tokens=output_tokens)


def actual_cost_at(price: ModelPrice, *, input_tokens: int, output_tokens: int) -> int:
    return _tokens_cost(input_tokens, price.input_per_million, Rounding.FLOOR) + _tokens_cost(
        output_tokens, price.output_per_million, Rounding.FLOOR
    )
