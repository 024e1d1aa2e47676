"""Metered billing: reserve by model and tokens at the price in effect, commit by usage at that price.

The reserve records the price version on the entry (and in its audit row); the commit prices the
usage at that version, so a price change while a request is in flight never changes what it
costs. Rounding is explicit: the hold rounds each side up, the charge rounds each side down.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from billing import services
from billing.errors import EntryNotFound
from billing.results import EntryResult, Metering, Usage
from credits.accuracy import accuracy_observe
from credits.pricing import ModelPrice, actual_cost_at, estimate_cost_at, model_price
from finn.errors import Conflict, InvalidRequest

MAX_TOKENS = 10_000_000  # tokens per request: far above any context window
_PRICED_SQL = (
    "SELECT e.price_version, p.model, p.input_per_million, p.output_per_million FROM billing_billingentry e"
    " LEFT JOIN credits_modelpriceversion p ON p.id = e.price_version"
    " WHERE e.id = %s AND (%s::bigint IS NULL OR e.account_id = %s)"
)


def _tokens(name: str, value: int, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_TOKENS:
        raise InvalidRequest(f"{name} must be an integer from {minimum} to {MAX_TOKENS}", reason="invalid_tokens")
    return value


def metered_reserve(
    *,
    account_id: int,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    correlation_id: str,
    now: datetime,
    ttl_seconds: int | None = None,
    idempotency_key: str | None = None,
) -> EntryResult:
    """Hold what ``input_tokens`` in and at most ``max_output_tokens`` out cost at ``model``'s price now."""
    input_tokens = _tokens("input_tokens", input_tokens)
    max_output_tokens = _tokens("max_output_tokens", max_output_tokens, minimum=1)
    price = model_price(model, now)  # 400 unknown_model
    assert price.version is not None
    estimate = estimate_cost_at(price, input_tokens=input_tokens, max_output_tokens=max_output_tokens)
    if estimate < 1:
        raise InvalidRequest(f"this request costs nothing at {model}'s price: nothing to hold", reason="zero_estimate")
    return services.entry_reserve(
        account_id=account_id,
        estimated_cost=estimate,
        correlation_id=correlation_id,
        now=now,
        ttl_seconds=ttl_seconds,
        idempotency_key=idempotency_key,
        metering=Metering(model, price.version, input_tokens, max_output_tokens),
    )


def metered_commit(*, entry_id: str, usage: Usage, now: datetime, account_id: int | None = None) -> EntryResult:
    """Charge ``usage`` at the price version the entry was reserved at (each side rounded down)."""
    _tokens("usage.input_tokens", usage.input_tokens)
    _tokens("usage.output_tokens", usage.output_tokens)
    with connection.cursor() as cursor:  # one query: the entry's price version and that price
        cursor.execute(_PRICED_SQL, [entry_id, account_id, account_id])
        row = cursor.fetchone()
    if row is None:
        raise EntryNotFound(f"billing entry {entry_id} not found")
    if row[0] is None:
        raise NotMetered("this entry was reserved with a raw estimate: commit it with actual_cost")
    price = ModelPrice(row[1], int(row[2]), int(row[3]), int(row[0]))  # versions are never edited
    actual = actual_cost_at(price, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
    result = services.entry_commit(entry_id=entry_id, actual_cost=actual, usage=usage, now=now, account_id=account_id)
    accuracy_observe(model=price.model, actual=int(result.entry.actual_cost or 0), estimate=result.entry.estimated_cost)
    return result


class NotMetered(Conflict):
    code = "not_metered"
