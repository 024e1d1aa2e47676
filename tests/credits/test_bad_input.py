"""Every endpoint of the credits app answers bad input with a 4xx code, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

ENDPOINTS = [
    "/api/v1/pricing/estimate",
    "/api/v1/auth/verify",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
    "/api/v1/credits/purchase",
]

BODIES: list[Any] = [
    {},
    [],
    "text",
    {"model": 5, "input_tokens": "1", "max_output_tokens": 1.5},
    {"message": ["x"], "signature": {"a": 1}},
    {"refresh_token": "x" * 5000},
    {"pack_size": "500", "payment_proof": "nope", "idempotency_key": 1},
    {"pack_size": 500, "payment_proof": {"tx_hash": "0x" + "a" * 5000}, "idempotency_key": "k"},
    {"model": "x" * 1000, "input_tokens": 2**70, "max_output_tokens": -1},
]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("body", BODIES)
def test_bad_bodies_are_400(make_account, path: str, body: Any) -> None:
    # when
    response = make_account(0).client().post(path, body, content_type="application/json")
    # then
    assert response.status_code == 400, (path, body, response.content)
    assert response.json()["code"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ENDPOINTS)
def test_malformed_json_and_wrong_content_type_are_400(make_account, path: str) -> None:
    client = make_account(0).client()
    malformed = client.post(path, data="{oops", content_type="application/json")
    wrong_type = client.post(path, data="a=b", content_type="application/x-www-form-urlencoded")
    assert (malformed.status_code, malformed.json()["code"]) == (400, "malformed_json")
    assert (wrong_type.status_code, wrong_type.json()["code"]) == (400, "unsupported_media_type")


@pytest.mark.django_db
def test_unknown_agent_is_404(make_account) -> None:
    response = make_account(0, staff=True).client().get("/api/v1/agents/999999999/budget")
    assert (response.status_code, response.json()["code"]) == (404, "account_not_found")


@pytest.mark.django_db
def test_purchase_needs_authentication() -> None:
    response = Client().post("/api/v1/credits/purchase", {}, content_type="application/json")
    assert response.status_code == 401
