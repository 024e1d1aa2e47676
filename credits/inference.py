"""The one client of the inference upstream for paid (x402) calls.

``INFERENCE_URL`` set: ``POST {INFERENCE_URL}`` with ``{"model", "prompt", "max_tokens"}``, answered
``{"output": str, "usage": {"input_tokens": int, "output_tokens": int}}``.
Unset: only the built-in **demo** model ``echo`` exists, which repeats the
prompt (for ``make run`` and tests; it is not an AI model).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from django.conf import settings

from billing.units import Rounding, divide
from credits.pricing import ModelPrice, model_price
from finn.untrusted_json import json_loads_untrusted

ECHO = "echo"
# Demo prices: 1 µUSD per input token, 2 µUSD per output token.
ECHO_PRICE = ModelPrice(ECHO, 1_000_000, 2_000_000)


class InferenceFailed(Exception):
    pass


@dataclass(frozen=True)
class InferenceResult:
    output: str
    input_tokens: int
    output_tokens: int


def price_for(model: str) -> ModelPrice:
    """The model's price; ``echo`` only while no upstream is configured (else 400 unknown_model)."""
    if model == ECHO and not settings.INFERENCE_URL:
        return ECHO_PRICE
    return model_price(model)


def input_tokens_bound(prompt: str) -> int:
    """An upper bound of the prompt's tokens for a quote: its UTF-8 bytes (a token is ≥ 1 byte)."""
    return len(prompt.encode("utf-8"))


def run(*, model: str, prompt: str, max_tokens: int) -> InferenceResult:
    if model == ECHO and not settings.INFERENCE_URL:
        input_tokens = divide(len(prompt.encode("utf-8")), 4, Rounding.CEIL)
        words = prompt.split()
        output_tokens = min(max_tokens, input_tokens)
        return InferenceResult(
            output=" ".join(words)[: output_tokens * 4], input_tokens=input_tokens, output_tokens=output_tokens
        )
    try:
        response = httpx.post(
            settings.INFERENCE_URL,
            json={"model": model, "prompt": prompt, "max_tokens": max_tokens},
            timeout=settings.INFERENCE_TIMEOUT_SECONDS,
        )
        data = json_loads_untrusted(response.content) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        raise InferenceFailed(type(exc).__name__) from None
    if not isinstance(data, dict) or not isinstance(data.get("output"), str) or not isinstance(data.get("usage"), dict):
        raise InferenceFailed(f"bad answer (http {response.status_code})")
    usage = data["usage"]
    tokens = (usage.get("input_tokens"), usage.get("output_tokens"))
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
        raise InferenceFailed("bad usage")
    return InferenceResult(
        output=data["output"], input_tokens=int(tokens[0]), output_tokens=min(int(tokens[1]), max_tokens)
    )
