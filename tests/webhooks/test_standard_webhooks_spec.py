"""Standard Webhooks as the spec defines it, signed and verified by the official library."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from django.test import Client, override_settings
from standardwebhooks.webhooks import Webhook

from webhooks.adapters import SignatureError, verify_standard
from webhooks.models import WebhookEvent

from .helpers import SECRETS, STANDARD_SECRET

# The spec's published test vector (standard-webhooks/standard-webhooks, libraries' tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_test_vector_verifies() -> None:
    # the official library signs the vector as published...
    signed = Webhook(VECTOR_SECRET).sign(
        VECTOR_ID, datetime.fromtimestamp(VECTOR_TIMESTAMP, tz=UTC), VECTOR_PAYLOAD.decode()
    )
    assert signed == VECTOR_SIGNATURE
    # ...and finn accepts exactly that, at that time, and refuses a changed body
    verify_standard(
        VECTOR_PAYLOAD,
        webhook_id=VECTOR_ID,
        timestamp=str(VECTOR_TIMESTAMP),
        header=VECTOR_SIGNATURE,
        secret=VECTOR_SECRET,
        now=VECTOR_TIMESTAMP,
        tolerance=300,
    )
    with pytest.raises(SignatureError):
        verify_standard(
            VECTOR_PAYLOAD + b" ",
            webhook_id=VECTOR_ID,
            timestamp=str(VECTOR_TIMESTAMP),
            header=VECTOR_SIGNATURE,
            secret=VECTOR_SECRET,
            now=VECTOR_TIMESTAMP,
            tolerance=300,
        )


def _send(body: dict[str, object], *, msg_id: str) -> tuple[object, dict[str, str], bytes]:
    payload = json.dumps(body)
    now = datetime.fromtimestamp(int(time.time()), tz=UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(STANDARD_SECRET).sign(msg_id, now, payload),
    }
    # the library's own verification passes on what finn receives
    Webhook(STANDARD_SECRET).verify(payload, headers)
    response = Client().post(
        "/api/v1/webhooks/standard", data=payload.encode(), content_type="application/json", headers=headers
    )
    return response, headers, payload.encode()


@pytest.mark.django_db
def test_a_spec_shaped_message_is_accepted_with_its_id_from_the_header() -> None:
    # given: {"type", "timestamp", "data"} exactly as the spec shows, id only in webhook-id
    body = {"type": "subscription.updated", "timestamp": "2026-12-02T06:00:00Z", "data": {"status": "active"}}
    with override_settings(**SECRETS):
        # when
        response, _, _ = _send(body, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    # then: before, 400 invalid_event ("the event needs id, type, occurred_at, data")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "accepted"
    event = WebhookEvent.objects.get()
    assert (event.provider, event.provider_event_id, event.raw_type) == (
        "standard",
        "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        "subscription.updated",
    )
    assert event.occurred_at == datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_unknown_types_are_stored_and_acknowledged_and_duplicates_dedupe_on_webhook_id() -> None:
    body = {"type": "invoice.something_new", "timestamp": "2026-12-02T06:00:00Z", "data": {}}
    with override_settings(**SECRETS):
        first, _, _ = _send(body, msg_id="msg_unknown_1")
        again, _, _ = _send(body, msg_id="msg_unknown_1")
    assert first.status_code == 200, first.content
    assert first.json()["status"] == "accepted"
    assert again.status_code == 200
    assert again.json()["status"] in ("accepted", "duplicate")
    assert WebhookEvent.objects.filter(provider_event_id="msg_unknown_1").count() == 1
    assert WebhookEvent.objects.get().event_type == ""  # stored, then skipped by processing


@pytest.mark.django_db
def test_without_a_body_timestamp_the_header_time_is_used() -> None:
    body = {"type": "subscription.updated", "data": {}}
    with override_settings(**SECRETS):
        response, headers, _ = _send(body, msg_id="msg_no_ts")
    assert response.status_code == 200, response.content
    assert WebhookEvent.objects.get().occurred_at == datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{"data": {}}, {"type": 5, "data": {}}, {"type": "x", "data": []}, []])
def test_a_body_that_is_not_a_standard_webhooks_message_is_400(body: object) -> None:
    payload = json.dumps(body)
    now = datetime.fromtimestamp(int(time.time()), tz=UTC)
    headers = {
        "webhook-id": "msg_bad",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(STANDARD_SECRET).sign("msg_bad", now, payload),
    }
    with override_settings(**SECRETS):
        response = Client().post(
            "/api/v1/webhooks/standard", data=payload.encode(), content_type="application/json", headers=headers
        )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_event"
    assert not WebhookEvent.objects.exists()
