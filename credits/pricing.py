"""Per-model prices, versioned in the database, and cost calculations (integer µUSD; explicit rounding).

A price is a ``ModelPriceVersion`` row, effective from its ``effective_from`` on; rows are
never edited (a trigger refuses it), so an entry reserved at version N is charged at N.
``FINN_MODEL_PRICING_JSON`` (``settings.MODEL_PRICING``) seeds a model that has no version yet,
after every ``migrate``; from then on prices change through ``model_price_set`` (the admin),
which is audited and never retroactive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction

from billing.units import Rounding, divide
from credits.errors import UnknownModel
from credits.models import ModelPriceVersion
from credits.pricing_config import PER_MILLION
from finn import clock
from finn.audit import audit_append
from finn.errors import InvalidRequest

# Seeded prices are in effect from here on (before any entry can exist).
SEED_EFFECTIVE_FROM = datetime(2000, 1, 1, tzinfo=UTC)
SEED_ACTOR = "seed:FINN_MODEL_PRICING_JSON"
MODEL_NAME = re.compile(r"^[A-Za-z0-9._:/-]{1,100}$")
MAX_PER_MILLION = 10**15  # 1,000 USD per token: far above any real price, far below overflow


@dataclass(frozen=True)
class ModelPrice:
    model: str
    input_per_million: int  # µUSD per 1,000,000 input tokens
    output_per_million: int
    version: int | None = None  # the ModelPriceVersion row; None: the built-in demo model
    effective_from: datetime | None = None


def _price(row: ModelPriceVersion) -> ModelPrice:
    return ModelPrice(row.model, row.input_per_million, row.output_per_million, row.pk, row.effective_from)


_IN_EFFECT_SQL = (
    "SELECT DISTINCT ON (model) id, model, input_per_million, output_per_million, effective_from"
    " FROM credits_modelpriceversion WHERE effective_from <= %s {where} ORDER BY model, effective_from DESC"
)


def _in_effect(at: datetime, model: str | None = None) -> list[ModelPrice]:
    sql = _IN_EFFECT_SQL.format(where="" if model is None else "AND model = %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [at] if model is None else [at, model])
        return [ModelPrice(m, i, o, pk, f) for pk, m, i, o, f in cursor.fetchall()]


def model_prices(at: datetime | None = None) -> list[ModelPrice]:
    """Every model's price in effect at ``at`` (now by default), by model name."""
    return _in_effect(clock.now() if at is None else at)


def model_names() -> list[str]:
    """The models finn has prices for (the API schema lists them)."""
    configured = set(settings.MODEL_PRICING)  # seeded by migrate, so priced once migrated
    try:
        return sorted(configured | set(ModelPriceVersion.objects.values_list("model", flat=True).distinct()))
    except DatabaseError:  # schema generation without a database
        return sorted(configured)


def model_price(model: str, at: datetime | None = None) -> ModelPrice:
    """The price of ``model`` in effect at ``at`` (one indexed query); unknown → 400 unknown_model."""
    prices = _in_effect(clock.now() if at is None else at, model)
    if not prices:
        known = model_names()
        raise UnknownModel(f"unknown model {model!r}; known: {', '.join(known)}", known_models=known)
    return prices[0]


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


def _per_million(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PER_MILLION:
        raise InvalidRequest(
            f"{name} must be an integer of µUSD per million tokens, 0 to {MAX_PER_MILLION}", field=name
        )
    return value


def model_price_check(
    *, model: Any, input_per_million: Any, output_per_million: Any, effective_from: datetime | None, now: datetime
) -> datetime:
    """The checks of a new price (the service's and the admin form's); answers when it takes effect.

    Each refusal is an InvalidRequest whose ``field`` names the input it is about.
    """
    if not isinstance(model, str) or not MODEL_NAME.match(model):
        raise InvalidRequest(
            "model must be 1-100 characters of A-Z a-z 0-9 . _ : / -", reason="invalid_model", field="model"
        )
    _per_million("input_per_million", input_per_million)
    _per_million("output_per_million", output_per_million)
    start = now if effective_from is None else effective_from
    if start < now:
        raise InvalidRequest(
            "a price cannot take effect in the past (entries already reserved keep theirs)",
            reason="retroactive_price",
            field="effective_from",
        )
    return start


@transaction.atomic  # not durable: the admin's change form runs it inside its own transaction
def model_price_set(
    *,
    model: str,
    input_per_million: int,
    output_per_million: int,
    actor: str,
    reason: str,
    now: datetime,
    effective_from: datetime | None = None,
) -> ModelPrice:
    """A new price version for ``model`` from ``effective_from`` (now by default; never earlier).

    Entries already reserved keep the version they were reserved at. Audited
    (``credits_model_price_set``) in the same transaction.
    """
    start = model_price_check(
        model=model, input_per_million=input_per_million, output_per_million=output_per_million,
        effective_from=effective_from, now=now,
    )  # fmt: skip
    reason = (reason or "").strip()
    if not reason:
        raise InvalidRequest("a price change needs a reason", reason="reason_required")
    if not actor:
        raise InvalidRequest("a price change needs an actor", reason="actor_required")
    previous = _in_effect(start, model)
    try:
        with transaction.atomic():
            row = ModelPriceVersion.objects.create(
                model=model,
                input_per_million=input_per_million,
                output_per_million=output_per_million,
                effective_from=start,
                created_at=now,
                created_by=actor,
                reason=reason,
            )
    except IntegrityError:
        raise InvalidRequest(
            f"{model} already has a price taking effect at {start.isoformat()}", reason="price_conflict"
        ) from None
    audit_append(
        event_type="credits_model_price_set",
        payload={
            "model": model,
            "price_version": str(row.pk),
            "previous_version": str(previous[0].version) if previous else None,
            "input_per_million": str(input_per_million),
            "output_per_million": str(output_per_million),
            "effective_from": start.isoformat(),
        },
        correlation_id=f"price:{row.pk}",
        now=now,
        actor=actor,
        reason=reason,
    )
    return _price(row)


def pricing_seed() -> int:
    """A version for each configured model that has none yet (after migrate; idempotent, race-safe)."""
    pricing: dict[str, tuple[int, int]] = settings.MODEL_PRICING
    now = datetime.now(UTC)  # migrate time, not a money path
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO credits_modelpriceversion (model, input_per_million, output_per_million, effective_from,"
            " created_at, created_by, reason) SELECT %s, %s, %s, %s, %s, %s, %s"
            " WHERE NOT EXISTS (SELECT 1 FROM credits_modelpriceversion WHERE model = %s)"
            " ON CONFLICT (model, effective_from) DO NOTHING",
            [
                (model, i, o, SEED_EFFECTIVE_FROM, now, SEED_ACTOR, "seeded from settings", model)
                for model, (i, o) in sorted(pricing.items())
            ],
        )
    return len(pricing)
