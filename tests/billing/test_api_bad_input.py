"""Bad input gets a 400 JSON error with a code, never a 500, and writes nothing."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import post_json

from .helpers import ledger_snapshot

RESERVE = "/api/v1/billing/entries"
TOO_BIG = 2**63


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"estimated_cost": 1.5}, "not_integer"),
        ({"estimated_cost": 1000.0}, "not_integer"),
        ({"estimated_cost": "1000"}, "not_integer"),
        ({"estimated_cost": True}, "not_integer"),
        ({"estimated_cost": None}, None),
        ({"estimated_cost": [1]}, "not_integer"),
        ({"estimated_cost": {"v": 1}}, "not_integer"),
        ({"estimated_cost": -1}, "too_small"),
        ({"estimated_cost": 0}, "too_small"),
        ({"estimated_cost": TOO_BIG}, "too_large"),
        ({"estimated_cost": 10**30}, "too_large"),
        ({}, None),
        ({"estimated_cost": 1, "ttl_seconds": 0}, "too_small"),
        ({"estimated_cost": 1, "ttl_seconds": 1.5}, "not_integer"),
        ({"estimated_cost": 1, "correlation_id": "has spaces"}, "invalid_token"),
        ({"estimated_cost": 1, "correlation_id": 12}, None),
        ({"estimated_cost": 1, "account_id": "x"}, "not_integer"),
    ],
)
def test_reserve_rejects_bad_body(make_account, body: object, reason: str | None) -> None:
    # given
    funded = make_account(10_000)
    before = ledger_snapshot()
    # when
    response = post_json(funded.client(), RESERVE, body)
    # then
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_request"
    assert response.json()["error"]
    if reason:
        assert response.json()["reason"] == reason
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_reserve_with_a_ttl_above_the_maximum_is_400(make_account) -> None:
    # when
    response = post_json(make_account(10_000).client(), RESERVE, {"estimated_cost": 1, "ttl_seconds": 10**6})
    # then
    assert response.status_code == 400
    assert response.json()["reason"] == "invalid_ttl"


@pytest.mark.django_db
@pytest.mark.parametrize("account_id", [999_999_999, "other"])
def test_reserve_for_an_unknown_or_foreign_account_is_400(make_account, account_id: object) -> None:
    # given
    funded, other = make_account(10_000), make_account(10_000)
    target = other.pk if account_id == "other" else account_id
    before = ledger_snapshot()
    # when
    response = post_json(funded.client(), RESERVE, {"estimated_cost": 1, "account_id": target})
    # then
    assert response.status_code == 400
    assert response.json()["reason"] == "unknown_account"
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_staff_reserve_for_an_unknown_account_is_400(make_account) -> None:
    # given
    staff = make_account(0, staff=True)
    # when
    response = post_json(staff.client(), RESERVE, {"estimated_cost": 1, "account_id": 999_999_999})
    # then
    assert response.status_code == 400
    assert response.json()["reason"] == "unknown_account"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("commit", {"actual_cost": -1}),
        ("commit", {"actual_cost": 1.0}),
        ("commit", {"actual_cost": "5"}),
        ("commit", {"actual_cost": TOO_BIG}),
        ("commit", {}),
        ("release", {"reason": "because"}),
        ("release", {}),
        ("release", {"reason": 5}),
    ],
)
def test_commit_and_release_reject_bad_body(make_account, path: str, body: object) -> None:
    # given
    funded = make_account(10_000)
    entry_id = post_json(funded.client(), RESERVE, {"estimated_cost": 100}).json()["entry"]["id"]
    before = ledger_snapshot()
    # when
    response = post_json(funded.client(), f"{RESERVE}/{entry_id}/{path}", body)
    # then
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_request"
    assert ledger_snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "entry_id",
    [
        "nope",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
        "01ARZ3NDEKTSV4RRFFQ69G5FAU",
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",
    ],
)
def test_malformed_ulid_is_400(make_account, entry_id: str) -> None:
    # given
    client = make_account(10_000).client()
    # when
    responses = [
        client.get(f"{RESERVE}/{entry_id}"),
        post_json(client, f"{RESERVE}/{entry_id}/commit", {"actual_cost": 1}),
        post_json(client, f"{RESERVE}/{entry_id}/release", {"reason": "user_cancel"}),
    ]
    # then
    assert [r.status_code for r in responses] == [400, 400, 400]
    assert {r.json()["code"] for r in responses} == {"invalid_entry_id"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content_type", "data", "code"),
    [
        ("text/plain", '{"estimated_cost": 1}', "unsupported_media_type"),
        ("application/x-www-form-urlencoded", "estimated_cost=1", "unsupported_media_type"),
        ("application/json", '{"estimated_cost": ', "malformed_json"),
        ("application/json", "[1, 2]", "invalid_request"),
        ("application/json", '"text"', "invalid_request"),
        ("application/json", "", "invalid_request"),
        ("application/json", '{"estimated_cost": NaN}', "malformed_json"),
    ],
)
def test_wrong_content_type_or_malformed_json_is_400(make_account, content_type: str, data: str, code: str) -> None:
    # given
    funded = make_account(10_000)
    before = ledger_snapshot()
    # when
    response = funded.client().post(RESERVE, data=data, content_type=content_type)
    # then
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_bad_idempotency_key_is_400(make_account) -> None:
    # when
    response = post_json(
        make_account(10_000).client(), RESERVE, {"estimated_cost": 1}, **{"Idempotency-Key": "a" * 300}
    )
    # then
    assert response.status_code == 400
    assert response.json()["reason"] == "invalid_idempotency_key"


@pytest.mark.django_db
def test_unknown_url_and_wrong_method_are_json() -> None:
    # when
    missing = Client().get("/api/v1/nothing-here")
    wrong = Client().delete("/health")
    # then
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert wrong.status_code == 405
