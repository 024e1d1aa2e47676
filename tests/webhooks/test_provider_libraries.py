"""Stripe and Paddle deliveries signed by the providers' own libraries are accepted; tampered ones are not."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from django.test import Client, override_settings
from paddle_billing.Notifications import PaddleSignature, Secret

from webhooks.models import WebhookEvent

from .helpers import PADDLE_SECRET, SECRETS, STRIPE_SECRET


def _stripe_body(event_id: str) -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "invoice.paid",
            "created": int(time.time()),
            "data": {"object": {"id": "in_1", "subscription": "sub_9"}},
        }
    )


@pytest.mark.django_db
def test_a_delivery_signed_by_the_stripe_library_is_accepted() -> None:
    # given: the header exactly as Stripe's own library builds it (t=…,v1=…)
    payload = _stripe_body("evt_lib_1")
    header = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
    assert stripe.WebhookSignature.verify_header(payload, header, STRIPE_SECRET)
    with override_settings(**SECRETS):
        # when
        accepted = Client().post(
            "/api/v1/webhooks/stripe",
            data=payload.encode(),
            content_type="application/json",
            headers={"Stripe-Signature": header},
        )
        tampered = Client().post(
            "/api/v1/webhooks/stripe",
            data=payload.replace("in_1", "in_2").encode(),
            content_type="application/json",
            headers={"Stripe-Signature": header},
        )
    # then
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["status"] == "accepted"
    assert tampered.json()["code"] == "signature_invalid"
    assert WebhookEvent.objects.filter(provider="stripe", provider_event_id="evt_lib_1").count() == 1


@pytest.mark.django_db
def test_a_delivery_signed_with_the_paddle_sdk_is_accepted_and_passes_its_verifier() -> None:
    # given: ts + h1 from the Paddle SDK's own HMAC helper, checked by its own verifier
    body = json.dumps(
        {
            "event_id": "evt_paddle_lib_1",
            "event_type": "subscription.updated",
            "occurred_at": "2026-12-02T06:00:00Z",
            "data": {"id": "sub_1", "status": "active"},
        }
    )
    ts = int(time.time())
    h1 = PaddleSignature.calculate_hmac(PADDLE_SECRET, f"{ts}:{body}".encode()).hexdigest()
    header = f"ts={ts};h1={h1}"
    assert PaddleSignature().verify(header, body, Secret(PADDLE_SECRET))
    with override_settings(**SECRETS):
        # when
        response = Client().post(
            "/api/v1/webhooks/paddle",
            data=body.encode(),
            content_type="application/json",
            headers={"Paddle-Signature": header},
        )
    # then
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "accepted"
    assert WebhookEvent.objects.filter(provider="paddle", provider_event_id="evt_paddle_lib_1").count() == 1
