"""Signature vectors for each provider: valid, several with one valid, every rejection."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client, override_settings

from webhooks.models import WebhookEvent

from .helpers import SECRETS, paddle_event, paddle_header, standard_headers, stripe_header

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_secrets")]


@pytest.fixture
def _secrets():  # type: ignore[no-untyped-def]
    with override_settings(**SECRETS):
        yield


def _paddle(raw: bytes, header: str | None) -> object:
    headers = {"Paddle-Signature": header} if header is not None else {}
    return Client().post("/api/v1/webhooks/paddle", data=raw, content_type="application/json", headers=headers)


RAW = paddle_event("subscription.created", {"id": "sub_1", "custom_data": {"community_id": "c1"}}, event_id="evt_sig")


def test_paddle_valid_and_several_signatures_with_one_valid() -> None:
    ok = _paddle(RAW, paddle_header(RAW))
    several = _paddle(RAW, paddle_header(RAW, extra=["h1=" + "0" * 64, "h1=deadbeef"]))
    assert (ok.status_code, ok.json()) == (200, {"received": True, "status": "accepted", "event_id": "evt_sig"})
    assert several.status_code == 200
    assert WebhookEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "signature_missing"),
        ("garbage", "signature_invalid"),
        ("ts=1;h1=", "signature_invalid"),
        (lambda raw: paddle_header(raw, secret="wrong"), "signature_invalid"),
        (lambda raw: paddle_header(raw + b" "), "signature_invalid"),  # tampered body
        (lambda raw: paddle_header(raw, ts=int(time.time()) - 301), "timestamp_out_of_tolerance"),
        (lambda raw: paddle_header(raw, ts=int(time.time()) + 305), "timestamp_out_of_tolerance"),
    ],
)
def test_paddle_rejections_store_nothing(header: object, code: str) -> None:
    value = header(RAW) if callable(header) else header
    response = _paddle(RAW, value)  # type: ignore[arg-type]
    assert (response.status_code, response.json()["code"]) == (400, code)  # type: ignore[attr-defined]
    assert not WebhookEvent.objects.exists()


def test_re_serialized_json_fails_verification() -> None:
    header = paddle_header(RAW)
    reserialized = json.dumps(json.loads(RAW), indent=2).encode()
    response = _paddle(reserialized, header)
    assert response.json()["code"] == "signature_invalid"  # type: ignore[attr-defined]


def test_stripe_vectors() -> None:
    raw = json.dumps(
        {
            "id": "evt_s1",
            "type": "invoice.paid",
            "created": int(time.time()),
            "data": {"object": {"id": "in_1", "subscription": "sub_9"}},
        }
    ).encode()

    def post(header: str | None) -> object:
        return Client().post(
            "/api/v1/webhooks/stripe",
            data=raw,
            content_type="application/json",
            headers={"Stripe-Signature": header} if header else {},
        )

    assert post(stripe_header(raw)).status_code == 200  # type: ignore[attr-defined]
    assert post(stripe_header(raw, extra=["v1=" + "1" * 64])).json()["status"] == "accepted"  # type: ignore[attr-defined]
    assert post(None).json()["code"] == "signature_missing"  # type: ignore[attr-defined]
    assert post(stripe_header(raw, secret="x")).json()["code"] == "signature_invalid"  # type: ignore[attr-defined]
    assert post(stripe_header(raw, t=int(time.time()) - 1000)).json()["code"] == "timestamp_out_of_tolerance"  # type: ignore[attr-defined]


def test_standard_webhooks_vectors() -> None:
    raw = json.dumps(
        {"id": "std_1", "type": "payment.failed", "occurred_at": "2026-11-22T10:00:00Z", "data": {}}
    ).encode()

    def post(headers: dict[str, str]) -> object:
        return Client().post("/api/v1/webhooks/standard", data=raw, content_type="application/json", headers=headers)

    good = standard_headers(raw)
    assert post(good).status_code == 200  # type: ignore[attr-defined]
    several = {**good, "webhook-signature": "v1,AAAA " + good["webhook-signature"]}
    assert post(several).status_code == 200  # type: ignore[attr-defined]
    assert post({k: v for k, v in good.items() if k != "webhook-id"}).json()["code"] == "signature_missing"  # type: ignore[attr-defined]
    assert post(standard_headers(raw, key=b"other-key")).json()["code"] == "signature_invalid"  # type: ignore[attr-defined]
    assert post(standard_headers(raw, ts=int(time.time()) + 600)).json()["code"] == "timestamp_out_of_tolerance"  # type: ignore[attr-defined]


def test_wrong_content_type_oversize_and_unconfigured_provider() -> None:
    wrong = Client().post(
        "/api/v1/webhooks/paddle", data=RAW, content_type="text/plain", headers={"Paddle-Signature": paddle_header(RAW)}
    )
    big = b"{" + b" " * (1024 * 1024) + b"}"
    too_big = Client().post(
        "/api/v1/webhooks/paddle",
        data=big,
        content_type="application/json",
        headers={"Paddle-Signature": paddle_header(big)},
    )
    with override_settings(STRIPE_WEBHOOK_SECRET=""):
        missing = Client().post("/api/v1/webhooks/stripe", data=RAW, content_type="application/json")
    assert (wrong.status_code, wrong.json()["code"]) == (400, "unsupported_media_type")
    assert too_big.status_code == 413
    assert (missing.status_code, missing.json()["code"]) == (404, "provider_not_configured")
    assert not WebhookEvent.objects.exists()
