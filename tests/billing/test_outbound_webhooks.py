"""Outbound webhooks to customers: outbox rows in the event's transaction, Standard Webhooks
signatures checked with the official ``standardwebhooks`` library, retries, give-up, replay,
secret rotation, and no request to private addresses unless allowed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client, override_settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from billing import services
from billing.models import WebhookDelivery
from billing.outbound_delivery import deliveries_sweep, delivery_attempt
from billing.states import EntryState
from credits.api_keys import api_key_create
from credits.services import agent_wallet_create
from finn.models import AuditEvent
from tests.second_factor import verified_client

from .helpers import entry_in_state

pytestmark = pytest.mark.django_db(transaction=True)


class Receiver:
    """A customer's endpoint: records each request; answers ``statuses`` in turn (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/finn"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


def _register(key: str, url: str, types: list[str]) -> dict[str, Any]:
    response = Client(headers={"Authorization": f"Bearer {key}"}).post(
        "/api/v1/webhook-endpoints", {"url": url, "event_types": types}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _deliver_all() -> list[str]:
    return [delivery_attempt(d.pk) for d in WebhookDelivery.objects.order_by("pk")]


def test_a_void_is_delivered_signed_and_verifies_with_the_official_library(receiver, make_account) -> None:
    customer = make_account(10_000_000)
    created = _register(customer.key, receiver.url, ["entry.voided", "hold.expired"])
    listed = Client(headers={"Authorization": f"Bearer {customer.key}"}).get("/api/v1/webhook-endpoints").json()
    assert "secret" not in json.dumps(listed)  # shown once, at creation
    entry = entry_in_state(EntryState.COMMITTED, account_id=customer.account.pk, now=timezone.now(), actual=600)
    services.entry_void(entry_id=entry, reason="dispute", actor="fin", now=timezone.now())
    # then: one outbox row, written with the void
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event_type, delivery.status) == ("entry.voided", "pending")
    assert _deliver_all() == ["delivered"]
    headers, body = receiver.requests[0]
    event = Webhook(created["secret"]).verify(body, headers)
    assert event["type"] == "entry.voided"
    assert event["data"] == {
        "entry_id": entry, "refunded": 600, "reason": "dispute", "correlation_id": "test",
        "account_id": customer.account.pk,
    }  # fmt: skip
    assert headers["webhook-id"] == delivery.event_id
    with pytest.raises(WebhookVerificationError):
        Webhook(created["secret"]).verify(body + b" ", headers)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)


def test_failures_are_retried_with_backoff_under_one_webhook_id_then_delivered(receiver, make_account) -> None:
    customer = make_account(10_000_000)
    _register(customer.key, receiver.url, ["payment.received"])
    receiver.statuses = [500, 503]
    services.account_credit_mint(
        account_id=customer.account.pk, amount=5_000_000, idempotency_key="pay-1", correlation_id="p",
        now=timezone.now(),
    )  # fmt: skip
    delivery = WebhookDelivery.objects.get()
    outcomes = []
    for expected_delay in (5, 30, None):
        before = timezone.now()
        outcomes.append(delivery_attempt(delivery.pk))
        delivery.refresh_from_db()
        if expected_delay is not None:
            assert delivery.next_attempt_at is not None
            wait = (delivery.next_attempt_at - before).total_seconds()
            assert expected_delay - 1 < wait < expected_delay + 5, wait
            assert delivery_attempt(delivery.pk) == "skipped"  # not due yet
            WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())  # time passes
    assert outcomes == ["retry", "retry", "delivered"]
    assert {headers["webhook-id"] for headers, _ in receiver.requests} == {delivery.event_id}
    assert delivery.attempts == 3
    assert json.loads(receiver.requests[-1][1])["data"]["amount"] == 5_000_000


def test_after_24_hours_a_delivery_fails_and_staff_replay_it(receiver, make_account) -> None:
    customer = make_account(10_000_000)
    _register(customer.key, receiver.url, ["entry.voided"])
    entry = entry_in_state(EntryState.COMMITTED, account_id=customer.account.pk, now=timezone.now(), actual=10)
    services.entry_void(entry_id=entry, reason="r", actor="fin", now=timezone.now())
    WebhookDelivery.objects.update(created_at=timezone.now() - timedelta(hours=24))
    receiver.statuses = [500]
    assert _deliver_all() == ["failed"]
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert deliveries_sweep(now=timezone.now()) == 0  # failed rows are not retried by themselves
    # when: a superuser with the second factor replays it from the admin
    staff = verified_client(User.objects.create_superuser("root", password="pw"))
    page = "/admin/billing/webhookdelivery/"
    selected = {"action": "replay_deliveries", "_selected_action": [delivery.pk]}
    staff.post(page, {**selected, "confirmed": "yes", "reason": "receiver fixed"})
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert AuditEvent.objects.filter(event_type="webhook_delivery_replay", reason="receiver fixed").exists()
    assert _deliver_all() == ["delivered"]


def test_holds_expired_low_balance_and_credit_events_reach_subscribers_only(receiver, make_account) -> None:
    # given: an agent wallet told when it runs low; a user told of expired holds
    wallet = agent_wallet_create(
        owner_address="0x" + "cd" * 20, token_id="7", daily_cap=None, refill_threshold=4_000_000, now=timezone.now()
    )
    services.account_credit_mint(
        account_id=wallet.account.pk, amount=5_000_000, idempotency_key="a-1", correlation_id="a", now=timezone.now()
    )
    owner = make_account(1_000)
    agent_key = api_key_create(account=wallet.account, now=timezone.now()).secret
    _register(agent_key, receiver.url, ["balance.low"])
    user = make_account(1_000_000)
    _register(user.key, receiver.url, ["hold.expired"])
    # when: the agent commits below its threshold, a user's hold expires, an unsubscribed void happens
    entry_in_state(EntryState.COMMITTED, account_id=wallet.account.pk, now=timezone.now(),
                   estimate=2_000_000, actual=2_000_000)  # fmt: skip
    services.entry_reserve(
        account_id=user.account.pk, estimated_cost=500, correlation_id="short", now=timezone.now() - timedelta(hours=1)
    )
    services.holds_expire(now=timezone.now())
    voided = entry_in_state(EntryState.COMMITTED, account_id=owner.account.pk, now=timezone.now(), estimate=1, actual=0)
    services.entry_void(entry_id=voided, reason="r", actor="a", now=timezone.now())
    # then
    assert sorted(WebhookDelivery.objects.values_list("event_type", flat=True)) == ["balance.low", "hold.expired"]
    assert _deliver_all() == ["delivered", "delivered"]
    bodies = {json.loads(body)["type"]: json.loads(body)["data"] for _, body in receiver.requests}
    assert bodies["balance.low"]["available"] == 3_000_000
    assert bodies["hold.expired"]["amount"] == 500


def test_a_rolled_back_event_leaves_no_delivery(receiver, make_account) -> None:
    customer = make_account(10_000_000)
    _register(customer.key, receiver.url, ["entry.voided"])
    entry = entry_in_state(EntryState.COMMITTED, account_id=customer.account.pk, now=timezone.now(), actual=10)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.entry_void(entry_id=entry, reason="r", actor="fin", now=timezone.now())
        raise RuntimeError("the void's transaction fails after it")
    assert not WebhookDelivery.objects.exists()


def test_a_rotated_secret_signs_beside_the_old_one_for_a_day(receiver, make_account) -> None:
    customer = make_account(10_000_000)
    created = _register(customer.key, receiver.url, ["entry.voided"])
    client = Client(headers={"Authorization": f"Bearer {customer.key}"})
    rotated = client.post(f"/api/v1/webhook-endpoints/{created['endpoint']['id']}/rotate-secret").json()["secret"]
    assert rotated != created["secret"]
    entry = entry_in_state(EntryState.COMMITTED, account_id=customer.account.pk, now=timezone.now(), actual=10)
    services.entry_void(entry_id=entry, reason="r", actor="fin", now=timezone.now())
    _deliver_all()
    headers, body = receiver.requests[0]
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(rotated).verify(body, headers)["type"] == "entry.voided"
    assert Webhook(created["secret"]).verify(body, headers)["type"] == "entry.voided"  # during the overlap


def test_endpoints_must_be_public_https_and_known_event_types(make_account) -> None:
    customer = make_account(1_000)
    client = Client(headers={"Authorization": f"Bearer {customer.key}"})

    def register(url: str, types: list[str]) -> Any:
        return client.post(
            "/api/v1/webhook-endpoints", {"url": url, "event_types": types}, content_type="application/json"
        )

    with override_settings(OUTBOUND_WEBHOOKS_ALLOW_PRIVATE=False):
        for url in ("http://example.com/x", "https://127.0.0.1/x", "https://10.0.0.8/x", "https://[::1]/x",
                    "https://user:pw@example.com/x", "https://localhost/x"):  # fmt: skip
            answer = register(url, ["entry.voided"])
            assert answer.status_code == 400, url
            assert answer.json()["code"] == "invalid_request"
    assert register("http://127.0.0.1:9/x", ["entry.bought"]).status_code == 400
    assert register("http://127.0.0.1:9/x", []).status_code == 400
