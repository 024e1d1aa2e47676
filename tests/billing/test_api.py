"""The billing HTTP API: shape, authentication, isolation between accounts."""

from __future__ import annotations

import pytest
from django.test import Client

from billing.models import BillingEntry
from billing.states import EntryState
from finn.models import IdempotencyKey
from tests.conftest import post_json

from .helpers import ledger_snapshot

RESERVE = "/api/v1/billing/entries"


@pytest.mark.django_db
def test_reserve_commit_flow_answers_entry_and_balance(make_account) -> None:
    # given
    funded = make_account(10_000)
    client = funded.client()
    # when
    reserved = post_json(client, RESERVE, {"estimated_cost": 3_000, "correlation_id": "req-1"})
    entry_id = reserved.json()["entry"]["id"]
    committed = post_json(client, f"{RESERVE}/{entry_id}/commit", {"actual_cost": 2_000})
    fetched = client.get(f"{RESERVE}/{entry_id}")
    balance = client.get("/api/v1/accounts/me/balance")
    # then
    assert reserved.status_code == 201
    body = reserved.json()
    assert body["entry"]["state"] == "RESERVE_HELD"
    assert body["entry"]["estimated_cost"] == 3_000
    assert body["entry"]["actual_cost"] is None
    assert body["entry"]["correlation_id"] == "req-1"
    assert {"id", "state", "estimated_cost", "actual_cost", "expires_at"} <= set(body["entry"])
    assert body["balance"] == {"account_id": funded.pk, "available": 7_000, "held": 3_000}
    assert committed.status_code == 200
    assert committed.json()["entry"]["state"] == "COMMITTED"
    assert committed.json()["balance"] == {"account_id": funded.pk, "available": 8_000, "held": 0}
    assert fetched.json()["entry"]["actual_cost"] == 2_000
    assert balance.json() == {"balance": {"account_id": funded.pk, "available": 8_000, "held": 0}}


@pytest.mark.django_db
def test_release_via_api(make_account) -> None:
    # given
    funded = make_account(10_000)
    client = funded.client()
    entry_id = post_json(client, RESERVE, {"estimated_cost": 3_000}).json()["entry"]["id"]
    # when
    released = post_json(client, f"{RESERVE}/{entry_id}/release", {"reason": "pre_stream_failure"})
    # then
    assert released.status_code == 200
    assert released.json()["entry"]["state"] == "RELEASED"
    assert released.json()["balance"]["available"] == 10_000


@pytest.mark.django_db
def test_invalid_transition_is_409_with_states(make_account) -> None:
    # given
    funded = make_account(10_000)
    client = funded.client()
    entry_id = post_json(client, RESERVE, {"estimated_cost": 3_000}).json()["entry"]["id"]
    post_json(client, f"{RESERVE}/{entry_id}/release", {"reason": "user_cancel"})
    before = ledger_snapshot()
    # when
    response = post_json(client, f"{RESERVE}/{entry_id}/commit", {"actual_cost": 1})
    # then
    assert response.status_code == 409
    assert response.json() == {
        "error": "cannot move billing entry from RELEASED to COMMITTED",
        "code": "invalid_transition",
        "current_state": "RELEASED",
        "target_state": "COMMITTED",
    }
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_insufficient_funds_is_402(make_account) -> None:
    # given
    funded = make_account(100)
    # when
    response = post_json(funded.client(), RESERVE, {"estimated_cost": 101})
    # then
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_funds"
    assert BillingEntry.objects.count() == 0


@pytest.mark.django_db
def test_other_accounts_entries_are_404(make_account) -> None:
    # given
    alice, mallory = make_account(10_000), make_account(10_000)
    entry_id = post_json(alice.client(), RESERVE, {"estimated_cost": 1_000}).json()["entry"]["id"]
    before = ledger_snapshot()
    # when
    responses = [
        mallory.client().get(f"{RESERVE}/{entry_id}"),
        post_json(mallory.client(), f"{RESERVE}/{entry_id}/commit", {"actual_cost": 1}),
        post_json(mallory.client(), f"{RESERVE}/{entry_id}/release", {"reason": "user_cancel"}),
        mallory.client().get(f"/api/v1/accounts/{alice.pk}/balance"),
    ]
    # then
    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert all(r.json()["code"] in {"entry_not_found", "account_not_found"} for r in responses)
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_unknown_entry_is_404(make_account) -> None:
    # when
    response = make_account(0).client().get(f"{RESERVE}/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    # then
    assert response.status_code == 404
    assert response.json()["code"] == "entry_not_found"


@pytest.mark.django_db
def test_void_is_for_staff_only(make_account) -> None:
    # given
    customer, staff = make_account(10_000), make_account(0, staff=True)
    entry_id = post_json(customer.client(), RESERVE, {"estimated_cost": 1_000}).json()["entry"]["id"]
    post_json(customer.client(), f"{RESERVE}/{entry_id}/commit", {"actual_cost": 1_000})
    # when
    refused = post_json(customer.client(), f"{RESERVE}/{entry_id}/void", {"reason": "please"})
    voided = post_json(staff.client(), f"{RESERVE}/{entry_id}/void", {"reason": "duplicate charge"})
    # then
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"
    assert voided.status_code == 200
    assert voided.json()["entry"]["state"] == EntryState.VOIDED
    assert voided.json()["entry"]["void_reason"] == "duplicate charge"
    assert voided.json()["balance"] == {"account_id": customer.pk, "available": 10_000, "held": 0}


@pytest.mark.django_db
def test_staff_may_read_any_account_balance(make_account) -> None:
    # given
    customer, staff = make_account(1_234), make_account(0, staff=True)
    # when
    response = staff.client().get(f"/api/v1/accounts/{customer.pk}/balance")
    # then
    assert response.json()["balance"]["available"] == 1_234


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [None, "Bearer nope", "Basic abc", "Bearer", "Bearer a b"],
)
def test_missing_or_bad_keys_are_401(make_account, header: str | None) -> None:
    # given
    make_account(10_000)
    client = Client(headers={"Authorization": header} if header else None)
    # when
    response = post_json(client, RESERVE, {"estimated_cost": 1})
    # then
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_revoked_key_is_401(make_account, now) -> None:
    # given
    from credits.api_keys import api_key_revoke
    from credits.models import ApiKey

    funded = make_account(10_000)
    api_key_revoke(api_key=ApiKey.objects.get(account=funded.account), now=now)
    # when
    response = funded.client().get("/api/v1/accounts/me/balance")
    # then
    assert response.status_code == 401


@pytest.mark.django_db
def test_idempotent_replay_mismatch(make_account) -> None:
    # given
    funded = make_account(10_000)
    client = funded.client()
    # when
    first = post_json(client, RESERVE, {"estimated_cost": 1_000}, **{"Idempotency-Key": "k-1"})
    again = post_json(client, RESERVE, {"estimated_cost": 1_000}, **{"Idempotency-Key": "k-1"})
    different = post_json(client, RESERVE, {"estimated_cost": 2_000}, **{"Idempotency-Key": "k-1"})
    # then
    assert first.status_code == again.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert different.status_code == 422
    assert different.json()["code"] == "idempotency_mismatch"
    assert BillingEntry.objects.count() == 1


@pytest.mark.django_db
def test_key_in_flight_is_409_with_retry_after(make_account, now) -> None:
    # given: a claim held by a request that has not finished
    from finn.idempotency import idempotency_claim, request_fingerprint

    funded = make_account(10_000)
    fingerprint = request_fingerprint(method="POST", path=RESERVE, data={"estimated_cost": 1_000})
    idempotency_claim(account_id=funded.pk, scope="billing.reserve", key="k-2", request_hash=fingerprint, now=now)
    # when
    response = post_json(funded.client(), RESERVE, {"estimated_cost": 1_000}, **{"Idempotency-Key": "k-2"})
    # then
    assert response.status_code == 409
    assert response.json()["code"] == "request_in_progress"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert BillingEntry.objects.count() == 0


@pytest.mark.django_db
def test_refused_request_releases_its_idempotency_key(make_account) -> None:
    # given
    funded = make_account(500)
    client = funded.client()
    # when
    refused = post_json(client, RESERVE, {"estimated_cost": 1_000}, **{"Idempotency-Key": "k-3"})
    # then
    assert refused.status_code == 402
    assert not IdempotencyKey.objects.filter(key="k-3").exists()


@pytest.mark.django_db
def test_responses_carry_request_and_correlation_ids(make_account) -> None:
    # given
    funded = make_account(10_000)
    # when
    response = post_json(
        funded.client(), RESERVE, {"estimated_cost": 1}, **{"X-Request-ID": "r-1", "X-Correlation-ID": "flow-9"}
    )
    # then
    assert response.headers["X-Request-ID"] == "r-1"
    assert response.headers["X-Correlation-ID"] == "flow-9"
    assert response.json()["entry"]["correlation_id"] == "flow-9"


@pytest.mark.django_db
def test_entry_rendering_matches_the_documented_serializer(make_account) -> None:
    # given: the hot path builds the dict by hand; it must equal EntryOutput's rendering
    from billing.api import EntryOutput, entry_data

    funded = make_account(10_000)
    entry_id = post_json(funded.client(), RESERVE, {"estimated_cost": 3_000}).json()["entry"]["id"]
    entry = BillingEntry.objects.get(pk=entry_id)
    expected = dict(
        EntryOutput(
            {
                **{f: getattr(entry, f) for f in EntryOutput().fields if f not in {"exchange_rate", "usage", "model"}},
                "model": None,
                "usage": None,
                "exchange_rate": {
                    "credit_units_per_usd": entry.credit_units_per_usd,
                    "usd_usdc_rate": str(entry.usd_usdc_rate),
                    "frozen_at": entry.rate_frozen_at,
                },
            }
        ).data
    )
    # when
    rendered = entry_data(entry)
    # then
    assert rendered == {**expected, "exchange_rate": dict(expected["exchange_rate"])}
