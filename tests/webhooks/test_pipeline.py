"""Webhook processing: exactly once, lock first, nothing lost, fail closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from billing.models import Account, BadgePurchase, BoostPurchase, Subscription
from finn.models import AuditEvent
from finn.redis import get_redis
from tests.conftest import run_threads
from webhooks.models import WebhookEvent
from webhooks.services import MAX_ATTEMPTS, webhook_process, webhook_replay, webhook_sweep

from .helpers import SECRETS, paddle_event, post_paddle

pytestmark = pytest.mark.usefixtures("_secrets")


@pytest.fixture
def _secrets():  # type: ignore[no-untyped-def]
    with override_settings(**SECRETS):
        yield


def _process_all() -> list[str]:
    return [webhook_process(event_pk=pk) for pk in WebhookEvent.objects.order_by("pk").values_list("pk", flat=True)]


def _pack_event(account_id: int, *, event_id: str = "evt_pack", transaction_id: str = "txn_1") -> bytes:
    return paddle_event(
        "transaction.completed",
        {
            "id": transaction_id,
            "custom_data": {"type": "credit_pack", "account_id": str(account_id), "pack_size": "500"},
        },
        event_id=event_id,
    )


@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_10_times_concurrently_has_one_effect(make_account) -> None:
    # given
    funded = make_account(0)
    raw = _pack_event(funded.pk)
    # when
    acks = run_threads(10, lambda _: post_paddle(Client(), raw).json()["status"])
    outcomes = run_threads(10, lambda _: webhook_process(event_pk=WebhookEvent.objects.get().pk))
    # then
    assert set(acks) <= {"accepted", "duplicate"}
    assert WebhookEvent.objects.count() == 1
    assert outcomes.count("processed") == 1
    assert set(outcomes) <= {"processed", "duplicate", "lock_contention"}
    assert Account.objects.get(pk=funded.pk).available == 5_000_000  # 500 CU = 5 USD, once


@pytest.mark.django_db
def test_failed_then_redelivered_is_processed_once(make_account) -> None:
    # given: the pack names an account that does not exist yet -> the handler fails
    raw = _pack_event(999_999_999)
    post_paddle(Client(), raw)
    first = _process_all()
    event = WebhookEvent.objects.get()
    assert first == ["failed"]
    assert (event.status, event.attempts) == ("failed", 1)
    # when: the account now exists and the provider delivers the same event again
    funded = make_account(0)
    WebhookEvent.objects.filter(pk=event.pk).update(
        payload={**event.payload, "custom_data": {**event.payload["custom_data"], "account_id": str(funded.pk)}}
    )
    again = post_paddle(Client(), raw)
    second = _process_all()
    third = post_paddle(Client(), raw)
    # then: a failed event is not a duplicate; a processed one is
    assert again.json()["status"] == "accepted"
    assert second == ["processed"]
    assert third.json()["status"] == "duplicate"
    assert Account.objects.get(pk=funded.pk).available == 5_000_000


@pytest.mark.django_db
def test_five_failures_dead_letter_and_replay(make_account) -> None:
    # given
    post_paddle(Client(), _pack_event(999_999_998))
    pk = WebhookEvent.objects.get().pk
    # when
    outcomes = [webhook_process(event_pk=pk) for _ in range(MAX_ATTEMPTS)]
    # then
    assert outcomes == ["failed"] * (MAX_ATTEMPTS - 1) + ["dead"]
    assert WebhookEvent.objects.get().status == "dead"
    assert webhook_replay(event_pk=pk, now=timezone.now()) is True
    assert WebhookEvent.objects.get().status == "pending"


@pytest.mark.django_db
def test_unknown_types_are_skipped_never_mapped_to_another_handler() -> None:
    # given
    post_paddle(
        Client(), paddle_event("subscription.paused_forever", {"id": "sub_x", "custom_data": {"community_id": "c9"}})
    )
    # when
    outcomes = _process_all()
    # then
    assert outcomes == ["skipped"]
    assert not Subscription.objects.exists()


@pytest.mark.django_db
def test_subscription_moves_only_forward() -> None:
    # given
    now = datetime.now(UTC)
    created = paddle_event(
        "subscription.created",
        {"id": "sub_1", "customer_id": "cus_1", "custom_data": {"community_id": "c1", "tier": "premium"}},
        occurred_at=(now - timedelta(minutes=10)).isoformat(),
    )
    canceled = paddle_event(
        "subscription.canceled", {"id": "sub_1", "custom_data": {"community_id": "c1"}}, occurred_at=now.isoformat()
    )
    activated_late = paddle_event(
        "subscription.activated",
        {"id": "sub_1", "custom_data": {"community_id": "c1"}},
        occurred_at=(now - timedelta(minutes=5)).isoformat(),
    )
    # when: delivered out of order
    for raw in (created, canceled, activated_late):
        post_paddle(Client(), raw)
    outcomes = _process_all()
    # then: the late, older activation is recorded but ignored
    assert outcomes == ["processed", "processed", "processed_stale"]
    subscription = Subscription.objects.get(community_id="c1")
    assert (subscription.status, subscription.tier) == ("canceled", "starter")
    assert AuditEvent.objects.filter(event_type="subscription_canceled").count() == 1


@pytest.mark.django_db
def test_failed_payment_starts_a_24_hour_grace_period() -> None:
    # given
    post_paddle(
        Client(), paddle_event("subscription.activated", {"id": "sub_2", "custom_data": {"community_id": "c2"}})
    )
    post_paddle(Client(), paddle_event("transaction.payment_failed", {"id": "txn_9", "subscription_id": "sub_2"}))
    # when
    _process_all()
    # then
    subscription = Subscription.objects.get(community_id="c2")
    assert subscription.status == "past_due"
    assert subscription.grace_until is not None
    assert timedelta(hours=23, minutes=59) < subscription.grace_until - timezone.now() <= timedelta(hours=24)
    assert AuditEvent.objects.filter(event_type="grace_period_started").count() == 1


@pytest.mark.django_db
def test_boosts_stack_by_calendar_months_and_badges_are_one_per_member() -> None:
    # given
    def boost(txn: str, months: int) -> bytes:
        return paddle_event(
            "transaction.completed",
            {
                "id": txn,
                "custom_data": {
                    "type": "boost_purchase",
                    "member_id": "m1",
                    "community_id": "c3",
                    "months": str(months),
                },
            },
        )

    for raw in (
        boost("txn_b1", 1),
        boost("txn_b2", 3),
        paddle_event(
            "transaction.completed", {"id": "txn_g1", "custom_data": {"type": "badge_purchase", "memberId": "m1"}}
        ),
        paddle_event(
            "transaction.completed", {"id": "txn_g2", "custom_data": {"type": "badge_purchase", "memberId": "m1"}}
        ),
    ):
        post_paddle(Client(), raw)
    # when
    _process_all()
    # then
    first, second = BoostPurchase.objects.order_by("pk")
    assert second.expires_at > first.expires_at
    assert (second.expires_at - first.expires_at).days in range(89, 93)  # three calendar months later
    badge = BadgePurchase.objects.get()
    assert (badge.payment_id, badge.display_on_discord, badge.display_on_telegram) == ("txn_g1", True, False)


@pytest.mark.django_db
def test_redis_down_fails_closed_on_webhooks_but_not_elsewhere(make_account) -> None:
    # given
    funded = make_account(1_000)
    raw = _pack_event(funded.pk, event_id="evt_down")
    # when
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        webhook = post_paddle(Client(), raw)
        balance = funded.client().get("/api/v1/accounts/me/balance")
        security = Client().get("/health/security")
    # then
    assert webhook.status_code == 503
    assert webhook.headers["Retry-After"] == "30"
    assert webhook.json() == {
        "error": "Service temporarily unavailable",
        "code": "dependency_unavailable",
        "retry_after": 30,
    }
    assert balance.status_code == 200
    assert security.status_code == 503
    assert security.json()["checks"]["redis"] == "down"
    assert not WebhookEvent.objects.exists()  # the provider retries; nothing half-stored


@pytest.mark.django_db
def test_worker_without_redis_falls_back_to_a_postgres_lock_and_still_processes_once(make_account) -> None:
    # given: accepted while Redis was up
    funded = make_account(0)
    post_paddle(Client(), _pack_event(funded.pk))
    pk = WebhookEvent.objects.get().pk
    # when: the worker loses Redis
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        first = webhook_process(event_pk=pk)
        second = webhook_process(event_pk=pk)
    # then
    assert (first, second) == ("processed", "duplicate")
    assert Account.objects.get(pk=funded.pk).available == 5_000_000


@pytest.mark.django_db
def test_sweeper_re_enqueues_events_whose_wake_up_was_lost(make_account) -> None:
    # given
    post_paddle(Client(), _pack_event(make_account(0).pk))
    get_redis().delete("celery")
    WebhookEvent.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    # when
    swept = webhook_sweep(now=timezone.now())
    # then
    assert swept == 1
    assert get_redis().llen("celery") == 1
    assert webhook_sweep(now=timezone.now()) == 0  # leased


@pytest.mark.django_db
def test_health_security_is_ok_with_both_up() -> None:
    response = Client().get("/health/security")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


@pytest.mark.django_db(transaction=True)
def test_handlers_refuse_to_run_outside_a_transaction() -> None:
    # the original ran handlers query by query; ours need the pipeline's transaction
    from billing import services

    with pytest.raises(RuntimeError, match="inside the caller's transaction"):
        services.subscription_apply(
            event_type="subscription.created",
            provider="paddle",
            occurred_at=timezone.now(),
            data={},
            now=timezone.now(),
        )
