"""Redis stopped for real (a throwaway redis-server), then restarted.

While it is down the lock routes (webhooks, boost and badge purchases) answer
503 with Retry-After and other routes keep working; an event accepted before
the outage is still processed once (PostgreSQL advisory lock). After the
restart the health monitor closes again after one probe, and everything the
providers retry is processed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

from billing.models import Account, BoostPurchase
from finn.degradation import monitor
from tests.conftest import post_json
from tests.faults.servers import ThrowawayRedis
from tests.webhooks.helpers import SECRETS, paddle_event, post_paddle
from webhooks.models import WebhookEvent
from webhooks.services import webhook_process

USD = 1_000_000


@pytest.fixture
def redis_server() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    server.start()
    monitor.reset()
    try:
        with override_settings(REDIS_URL=server.url, REDIS_HEALTH_COOLDOWN_SECONDS=1, **SECRETS):
            yield server
    finally:
        server.stop()
        monitor.reset()


def _pack(account_id: int, event_id: str) -> bytes:
    return paddle_event(
        "transaction.completed",
        {
            "id": f"txn_{event_id}",
            "custom_data": {"type": "credit_pack", "account_id": str(account_id), "pack_size": "500"},
        },
        event_id=event_id,
    )


@pytest.mark.django_db(transaction=True)
def test_redis_stopped_and_restarted_lock_routes_fail_closed_then_everything_is_processed(
    redis_server: ThrowawayRedis, make_account
) -> None:
    funded = make_account(20 * USD)
    client = funded.client()
    # given: one event accepted while Redis is up
    before = post_paddle(Client(), _pack(funded.pk, "evt_before"))
    assert before.status_code == 200
    assert before.json()["status"] == "accepted"

    # when: Redis stops for real
    redis_server.stop()
    during = [post_paddle(Client(), _pack(funded.pk, "evt_during")) for _ in range(4)]
    boost = post_json(client, "/api/v1/billing/boosts", {"member_id": "m1", "community_id": "c1", "months": 1})
    balance = client.get("/api/v1/accounts/me/balance")
    security = Client().get("/health/security")
    processed_while_down = webhook_process(event_pk=WebhookEvent.objects.get(provider_event_id="evt_before").pk)

    # then: lock routes refuse, the rest works, the stored event is processed once
    for response in [*during, boost]:
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert response.json()["code"] == "dependency_unavailable"
    assert monitor.state == "OPEN"  # after 3 failures no request even tries Redis
    assert balance.status_code == 200
    assert security.status_code == 503
    assert security.json()["checks"]["redis"] == "down"
    assert processed_while_down == "processed"
    assert not WebhookEvent.objects.filter(provider_event_id="evt_during").exists()
    assert not BoostPurchase.objects.exists()

    # when: Redis comes back and the providers retry
    redis_server.start()
    time.sleep(1.1)  # the monitor's cooldown; then one probe closes it
    retried = post_paddle(Client(), _pack(funded.pk, "evt_during"))
    boost_again = post_json(client, "/api/v1/billing/boosts", {"member_id": "m1", "community_id": "c1", "months": 1})
    outcomes = [webhook_process(event_pk=pk) for pk in WebhookEvent.objects.order_by("pk").values_list("pk", flat=True)]

    # then: everything is processed exactly once
    assert retried.status_code == 200
    assert retried.json()["status"] == "accepted"
    assert boost_again.status_code == 201
    assert monitor.state == "CLOSED"
    assert outcomes == ["duplicate", "processed"]
    assert Account.objects.get(pk=funded.pk).available == 20 * USD + 2 * 5 * USD - 4_990_000
    assert Client().get("/health/security").status_code == 200
