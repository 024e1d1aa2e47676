"""Money units and pricing: integer arithmetic, explicit rounding, edges."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import Client, override_settings

from billing.units import Rounding, cu_to_micro_usd, micro_usd_to_cu, micro_usdc_to_micro_usd
from credits.errors import UnknownModel
from credits.models import ModelPriceVersion
from credits.pricing import compute_actual_cost, estimate_reserve_cost, pricing_seed
from credits.pricing_config import PricingConfigError, parse_model_pricing

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("amount", "ceil", "floor"),
    [(50_000, 5, 5), (50_001, 6, 5), (10_500, 2, 1), (0, 0, 0), (9_999, 1, 0), (1_000_000, 100, 100)],
)
def test_micro_usd_to_credit_units_rounds_as_asked(amount: int, ceil: int, floor: int) -> None:
    assert micro_usd_to_cu(amount, rounding=Rounding.CEIL) == ceil
    assert micro_usd_to_cu(amount, rounding=Rounding.FLOOR) == floor


def test_credit_units_round_trip() -> None:
    assert cu_to_micro_usd(5, rounding=Rounding.FLOOR) == 50_000
    assert cu_to_micro_usd(3, rounding=Rounding.CEIL, cu_per_usd=7) == 428_572
    assert cu_to_micro_usd(3, rounding=Rounding.FLOOR, cu_per_usd=7) == 428_571


def test_usdc_conversion_uses_the_rate_and_rounding() -> None:
    assert micro_usdc_to_micro_usd(1_000, rounding=Rounding.FLOOR, usd_per_usdc=Decimal("1.0")) == 1_000
    assert micro_usdc_to_micro_usd(100, rounding=Rounding.CEIL, usd_per_usdc=Decimal("1.333333")) == 134
    assert micro_usdc_to_micro_usd(100, rounding=Rounding.FLOOR, usd_per_usdc=Decimal("1.333333")) == 133


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        micro_usd_to_cu(-1, rounding=Rounding.FLOOR)


@pytest.mark.django_db
def test_reference_price_examples() -> None:
    assert estimate_reserve_cost(model="claude-sonnet-4", input_tokens=1000, max_output_tokens=500) == 10_500
    assert compute_actual_cost(model="gpt-4.1-mini", input_tokens=1000, output_tokens=300) == 880
    assert estimate_reserve_cost(model="gpt-4.1-mini", input_tokens=3, max_output_tokens=0) == 2
    assert compute_actual_cost(model="gpt-4.1-mini", input_tokens=3, output_tokens=0) == 1


@pytest.mark.django_db
def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModel) as info:
        estimate_reserve_cost(model="gpt-9", input_tokens=1, max_output_tokens=1)
    assert info.value.code == "unknown_model"
    assert "claude-sonnet-4" in info.value.extra["known_models"]


@pytest.mark.parametrize(
    "raw",
    [
        {},
        [],
        {"m": {"input": "1"}},
        {"m": {"input": "-1", "output": "1"}},
        {"m": {"input": "0.0000001", "output": "1"}},
        {"m": {"input": True, "output": 1}},
        {"m": {"input": "x", "output": 1}},
    ],
)
def test_bad_pricing_config_is_refused(raw: object) -> None:
    with pytest.raises(PricingConfigError):
        parse_model_pricing(raw)


@pytest.mark.parametrize("value", ["{not json", '{"m": {"input": "1"}}'])
def test_invalid_pricing_json_refuses_to_start(value: str) -> None:
    # when
    completed = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
            "SECRET_KEY": "x" * 50,
            "FINN_MODEL_PRICING_JSON": value,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then
    assert completed.returncode != 0
    assert completed.stderr.startswith("finn: refusing to start:")


@pytest.mark.django_db
def test_models_endpoint_lists_prices() -> None:
    # given: a model configured after the first migrate is seeded by the next one
    with override_settings(MODEL_PRICING=parse_model_pricing({"tiny": {"input": "0.5", "output": 2}})):
        pricing_seed()
    version = ModelPriceVersion.objects.get(model="tiny")
    # when
    response = Client().get("/api/v1/models")
    # then
    listed = {row["model"]: row for row in response.json()["models"]}
    assert listed["tiny"] == {
        "model": "tiny",
        "input_micro_usd_per_token": "0.5",
        "output_micro_usd_per_token": "2",
        "input_micro_usd_per_million_tokens": 500_000,
        "output_micro_usd_per_million_tokens": 2_000_000,
        "price_version": version.pk,
        "effective_from": "2000-01-01T00:00:00Z",
    }
    assert {"claude-sonnet-4", "gpt-4.1-mini"} <= set(listed)


@pytest.mark.django_db
def test_estimate_endpoint_and_unknown_model(make_account) -> None:
    # given
    client = make_account(0).client()
    # when
    ok = client.post(
        "/api/v1/pricing/estimate",
        {"model": "claude-sonnet-4", "input_tokens": 1000, "max_output_tokens": 500},
        content_type="application/json",
    )
    unknown = client.post(
        "/api/v1/pricing/estimate",
        {"model": "nope", "input_tokens": 1, "max_output_tokens": 1},
        content_type="application/json",
    )
    bad = client.post(
        "/api/v1/pricing/estimate",
        {"model": "gpt-4.1", "input_tokens": 1.5, "max_output_tokens": 1},
        content_type="application/json",
    )
    # then
    version = ModelPriceVersion.objects.get(model="claude-sonnet-4").pk
    assert ok.json() == {
        "model": "claude-sonnet-4",
        "estimated_cost": 10_500,
        "estimated_cost_cu": 2,
        "price_version": version,
    }
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown_model"
    assert "gpt-4.1" in unknown.json()["known_models"]
    assert bad.status_code == 400
