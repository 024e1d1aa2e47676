"""Boosts and badges bought from prepaid credit: charged once, under the member's lock, fail closed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from billing.models import Account, BadgePurchase, BoostPurchase, JournalEntry, Posting
from billing.services import BOOST_BUNDLE_CENTS, SYSTEM_REVENUE, system_account_id
from finn.flags import feature_flag_set
from finn.locks import lock_acquire
from finn.models import AuditEvent
from tests.conftest import post_json, run_threads

BOOSTS = "/api/v1/billing/boosts"
BADGES = "/api/v1/billing/badges"
USD = 1_000_000


def _boost(client: Client, months: int = 1, member: str = "m1", key: str | None = None) -> object:
    headers = {"Idempotency-Key": key} if key else {}
    return post_json(client, BOOSTS, {"member_id": member, "community_id": "c1", "months": months}, **headers)


@pytest.mark.django_db
def test_a_boost_charges_the_bundle_price_into_revenue_and_stacks(make_account) -> None:
    # given
    funded = make_account(100 * USD)
    client = funded.client()
    # when
    first = _boost(client, months=1)
    second = _boost(client, months=3)
    # then
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["amount"] == 4_990_000
    assert second.json()["amount"] == 13_470_000
    assert second.json()["balance"]["available"] == 100 * USD - 4_990_000 - 13_470_000
    one, three = BoostPurchase.objects.order_by("pk")
    assert (one.amount_paid_cents, three.amount_paid_cents) == (499, 1347)
    assert three.expires_at - one.expires_at >= timedelta(days=89)  # stacked after the active boost
    revenue = Posting.objects.filter(account_id=system_account_id(SYSTEM_REVENUE)).values_list("delta", flat=True)
    assert sorted(revenue) == [4_990_000, 13_470_000]
    assert AuditEvent.objects.filter(event_type="credit_spend").count() == 2


@pytest.mark.django_db
def test_the_same_idempotency_key_charges_once(make_account) -> None:
    funded = make_account(10 * USD)
    client = funded.client()
    first = _boost(client, key="buy-1")
    again = _boost(client, key="buy-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert BoostPurchase.objects.count() == 1
    assert Account.objects.get(pk=funded.pk).available == 10 * USD - 4_990_000


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"member_id": "m1", "community_id": "c1", "months": 2}, "invalid_request"),
        ({"member_id": "m1", "community_id": "c1", "months": "1"}, "invalid_request"),
        ({"member_id": "", "community_id": "c1", "months": 1}, "invalid_request"),
        ({"member_id": "m 1", "community_id": "c1", "months": 1}, "invalid_request"),
        ({"community_id": "c1", "months": 1}, "invalid_request"),
    ],
)
def test_bad_boost_input_is_a_400_and_charges_nothing(make_account, body, code) -> None:
    funded = make_account(10 * USD)
    response = post_json(funded.client(), BOOSTS, body)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not BoostPurchase.objects.exists()
    assert Account.objects.get(pk=funded.pk).available == 10 * USD


@pytest.mark.django_db
def test_insufficient_funds_is_a_402_and_writes_nothing(make_account) -> None:
    funded = make_account(1 * USD)
    journals = JournalEntry.objects.count()
    response = _boost(funded.client(), months=12)
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_funds"
    assert not BoostPurchase.objects.exists()
    assert JournalEntry.objects.count() == journals
    assert not AuditEvent.objects.filter(event_type="credit_spend").exists()


@pytest.mark.django_db
def test_one_badge_per_member_the_second_is_refused_uncharged(make_account) -> None:
    funded = make_account(20 * USD)
    client = funded.client()
    first = post_json(client, BADGES, {"member_id": "m1"})
    second = post_json(client, BADGES, {"member_id": "m1"})
    assert first.status_code == 201
    assert first.json()["amount"] == 4_990_000
    assert second.status_code == 409
    assert second.json()["code"] == "already_purchased"
    badge = BadgePurchase.objects.get()
    assert (badge.payment_id, badge.display_on_discord, badge.display_on_telegram) == (
        first.json()["payment_id"],
        True,
        False,
    )
    assert Account.objects.get(pk=funded.pk).available == 20 * USD - 4_990_000


@pytest.mark.django_db
def test_a_member_whose_lock_is_held_gets_409_and_is_not_charged(make_account) -> None:
    funded = make_account(20 * USD)
    lock_acquire(key="billing:lock:purchase:m1", fence_key="billing:lock:purchase:fence", ttl_seconds=60)
    response = post_json(funded.client(), BADGES, {"member_id": "m1"})
    assert response.status_code == 409
    assert response.json()["code"] == "purchase_in_progress"
    assert response.headers["Retry-After"] == "1"
    assert Account.objects.get(pk=funded.pk).available == 20 * USD


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_badge_purchases_for_one_member_charge_exactly_once(make_account) -> None:
    funded = make_account(100 * USD)

    def buy(index: int) -> tuple[int, str]:
        response = post_json(funded.client(), BADGES, {"member_id": "racer"}, **{"Idempotency-Key": f"k{index}"})
        return response.status_code, response.json().get("code", "ok")

    results = run_threads(10, buy)
    assert [status for status, _ in results].count(201) == 1
    assert {code for status, code in results if status != 201} <= {"already_purchased", "purchase_in_progress"}
    assert BadgePurchase.objects.count() == 1
    assert Account.objects.get(pk=funded.pk).available == 100 * USD - 4_990_000


@pytest.mark.django_db(transaction=True)
def test_concurrent_boosts_for_one_member_stack_without_overlap(make_account) -> None:
    funded = make_account(100 * USD)

    def buy(index: int) -> int:
        for _ in range(200):  # contention is a 409 with Retry-After; a client retries
            response = _boost(funded.client(), member="stacker", key=f"s{index}")
            if response.status_code != 409:
                return int(response.status_code)
        return 409

    results = run_threads(6, buy)
    assert results == [201] * 6
    ends = sorted(BoostPurchase.objects.values_list("expires_at", flat=True))
    assert len(set(ends)) == 6  # each bundle starts where the previous one ended
    assert Account.objects.get(pk=funded.pk).available == 100 * USD - 6 * BOOST_BUNDLE_CENTS[1] * 10_000


@pytest.mark.django_db
def test_purchases_fail_closed_while_redis_is_down_other_routes_work(make_account) -> None:
    funded = make_account(20 * USD)
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        boost = _boost(funded.client())
        badge = post_json(funded.client(), BADGES, {"member_id": "m1"})
        balance = funded.client().get("/api/v1/accounts/me/balance")
    for response in (boost, badge):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert response.json() == {
            "error": "Service temporarily unavailable",
            "code": "dependency_unavailable",
            "retry_after": 30,
        }
    assert balance.status_code == 200
    assert not BoostPurchase.objects.exists()
    assert not BadgePurchase.objects.exists()
    assert Account.objects.get(pk=funded.pk).available == 20 * USD


@pytest.mark.django_db
def test_the_billing_flag_off_turns_member_purchases_off_and_charges_nothing(make_account) -> None:
    # given
    funded = make_account(100 * USD)
    feature_flag_set(name="billing", enabled=False, actor="test", now=timezone.now())
    client = funded.client()
    # when
    boost = _boost(client, months=1)
    badge = post_json(client, BADGES, {"member_id": "m1"})
    # then: a disabled feature, not an outage; and reserves still work (no flag gates them)
    assert (boost.status_code, boost.json()["code"]) == (404, "feature_disabled")
    assert (badge.status_code, badge.json()["code"]) == (404, "feature_disabled")
    assert not BoostPurchase.objects.exists()
    assert not BadgePurchase.objects.exists()
    assert Account.objects.get(pk=funded.pk).available == 100 * USD
    reserve = post_json(client, "/api/v1/billing/entries", {"estimated_cost": 1_000})
    assert reserve.status_code == 201, reserve.content
