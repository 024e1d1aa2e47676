"""Untrusted JSON: one decoder with size and depth limits, and every public route answers 4xx, quickly."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from billing.models import Account
from finn.flags import allowlist_add
from finn.models import AuditEvent
from finn.untrusted_json import MAX_DEPTH, UntrustedJsonError, json_loads_untrusted
from tests.conftest import Funded
from tests.credits.x402_helpers import X402_SETTINGS
from tests.nft.helpers import OWNER, signed_in
from tests.webhooks.helpers import SECRETS, paddle_header, standard_headers, stripe_header
from webhooks.models import WebhookEvent

BOUND_SECONDS = 0.5  # one request; generous for CI (each answers in a few ms here)
DEEP = b"[" * 60_000
DEEP_OBJECTS = b'{"a":' * 20_000


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


# --- the decoder ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (DEEP, "malformed_json"),
        (DEEP_OBJECTS, "malformed_json"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "malformed_json"),
        (b'{"amount": NaN}', "malformed_json"),
        (b"[Infinity]", "malformed_json"),
        (b'{"a": "\xff\xfe"}', "malformed_json"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "malformed_json"),
        (b'{"amount": 1e999}', "malformed_json"),
        (b"[-1e400]", "malformed_json"),
        (b"[1" + b"0" * 1_100_000 + b"]", "payload_too_large"),
        (b"[0." + b"1" * 1_100_000 + b"]", "payload_too_large"),
        (b'{"a": "\x00"}', "malformed_json"),
        (b'{"a": "x\\u0000"}', "malformed_json"),  # an escaped NUL: PostgreSQL stores none
        (b'{"\\u0000": 1}', "malformed_json"),
        (b'{"a": ["\\ud800"]}', "malformed_json"),  # an unpaired surrogate: not UTF-8
        (b'{"a": "\\udc00\\ud800"}', "malformed_json"),  # low before high: still unpaired
        (b'["\\u0000' + b"a" * 1_000_000 + b'"]', "malformed_json"),
        (b"\x00" * 1000, "malformed_json"),
        (b" " * (1024 * 1024 + 1), "payload_too_large"),
        (b'["' + b'\\"' * 400_000, "malformed_json"),
        (b'"' * 1_000_000, "malformed_json"),
        (b"{[" * 500_000, "malformed_json"),
        (b"[" * 40 + b"a" * 1_000_000, "malformed_json"),
    ],
    ids=lambda value: value if isinstance(value, str) else f"{value[:12]!r}..{len(value)}",
)
def test_hostile_documents_are_refused_in_bounded_time(raw: bytes, code: str) -> None:
    # when
    started = time.perf_counter()
    with pytest.raises(UntrustedJsonError) as refused:
        json_loads_untrusted(raw)
    # then
    assert refused.value.code == code
    assert time.perf_counter() - started < BOUND_SECONDS


def test_duplicate_keys_keep_the_last_value_and_long_numbers_decode_linearly() -> None:
    assert json_loads_untrusted(b'{"estimated_cost": 1, "estimated_cost": 2}') == {"estimated_cost": 2}
    many = b"{" + b",".join(b'"k":%d' % i for i in range(50_000)) + b"}"
    started = time.perf_counter()
    assert json_loads_untrusted(many) == {"k": 49_999}
    assert json_loads_untrusted(b"[0." + b"1" * 500_000 + b"]") == [0.1111111111111111]
    assert time.perf_counter() - started < BOUND_SECONDS


def test_escapes_that_are_storable_stay() -> None:
    assert json_loads_untrusted(b'{"a": "\\ud83d\\ude00", "b": "\\\\u0000", "c": "\\u0001"}') == {
        "a": "\U0001f600",
        "b": "\\u0000",
        "c": "\x01",
    }


def test_limits_leave_ordinary_documents_alone() -> None:
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    brackets_in_strings = json.dumps({"prompt": "[" * 50_000 + "{" * 50_000, "n": [[1], {"a": [2]}]}).encode()
    assert json_loads_untrusted(nested) == json.loads(nested)
    assert json_loads_untrusted(brackets_in_strings) == json.loads(brackets_in_strings)
    assert json_loads_untrusted('{"é": 1}') == {"é": 1}


def test_an_unterminated_string_of_escapes_is_linear() -> None:
    # given: every quote would start a failed string scan to the end in a naive tokenizer
    raw = b"[" * 40 + b'"\\"' * 300_000
    # when
    started = time.perf_counter()
    with pytest.raises(UntrustedJsonError):
        json_loads_untrusted(raw)
    # then
    assert time.perf_counter() - started < BOUND_SECONDS


# --- every public route that decodes JSON -----------------------------------------------------

# POST/PUT routes of the API, each with a body too deep to decode. Routes under an id answer for
# the body before they look the id up (DRF parses on first access to request.data).
API_ROUTES = [
    ("post", "/api/v1/billing/entries"),
    ("post", "/api/v1/billing/entries/01JAAAAAAAAAAAAAAAAAAAAAAA/commit"),
    ("post", "/api/v1/billing/entries/01JAAAAAAAAAAAAAAAAAAAAAAA/release"),
    ("post", "/api/v1/billing/entries/01JAAAAAAAAAAAAAAAAAAAAAAA/void"),
    ("post", "/api/v1/billing/finalize/replay"),
    ("post", "/api/v1/billing/boosts"),
    ("post", "/api/v1/billing/badges"),
    ("post", "/api/v1/x402/invoke"),
    ("post", "/api/v1/credits/x402"),
    ("post", "/api/v1/credits/purchase"),
    ("post", "/api/v1/pricing/estimate"),
    ("post", "/api/v1/auth/verify"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"),
    ("post", "/api/v1/nft/0x0000000000000000000000000000000000000001/1/personality"),
    ("put", "/api/v1/nft/0x0000000000000000000000000000000000000001/1/personality"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), API_ROUTES)
@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECTS], ids=["arrays", "objects"])
def test_every_api_route_answers_deep_json_with_400(
    make_account: Callable[..., Funded], method: str, path: str, body: bytes
) -> None:
    # given: authenticated as staff, so every route reaches its body
    client = make_account(10_000_000, staff=True).client()
    with override_settings(**X402_SETTINGS, FEATURE_NFT=True, FEATURE_ONBOARDING=True):
        # when
        response, elapsed = _timed(lambda: getattr(client, method)(path, data=body, content_type="application/json"))
    # then
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_json"
    assert elapsed < BOUND_SECONDS


HUGE_NUMBERS = [
    b'{"estimated_cost": 1' + b"0" * 30 + b', "correlation_id": "c"}',  # beyond BIGINT
    b'{"estimated_cost": 1e999, "correlation_id": "c"}',  # a float that would be infinity
    b'{"estimated_cost": 1' + b"0" * 5000 + b', "correlation_id": "c"}',  # beyond int parsing's digit limit
    b'{"estimated_cost": 1.5, "correlation_id": "c"}',  # money is an integer
    b'{"estimated_cost": -1, "estimated_cost": 5, "correlation_id": "c", "correlation_id": ' + b"[]" + b"}",
]


UNSTORABLE_TEXT = [
    b'{"name": "a\\u0000b", "voice": "sage", "expertise_domains": ["x\\u0000"], "correlation_id": "c\\u0000"}',
    b'{"name": "\\ud800", "voice": "sage", "reason": "\\udfff", "message": "\\ud800", "prompt": "\\ud800"}',
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), API_ROUTES)
@pytest.mark.parametrize("body", UNSTORABLE_TEXT, ids=["nul", "surrogate"])
def test_every_api_route_answers_text_postgres_cannot_store_with_400(
    make_account: Callable[..., Funded], method: str, path: str, body: bytes
) -> None:
    # given: staff (every route reaches its body); the personality route stored this and answered 500
    client = make_account(10_000_000, staff=True).client()
    audit_rows = AuditEvent.objects.count()
    with override_settings(**X402_SETTINGS, FEATURE_NFT=True, FEATURE_ONBOARDING=True):
        # when
        response, elapsed = _timed(lambda: getattr(client, method)(path, data=body, content_type="application/json"))
    # then
    assert (response.status_code, response.json()["code"]) == (400, "malformed_json"), response.content
    assert elapsed < BOUND_SECONDS
    assert AuditEvent.objects.count() == audit_rows


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), API_ROUTES)
@pytest.mark.parametrize("body", HUGE_NUMBERS, ids=["bigint", "inf", "5000-digits", "fraction", "duplicates"])
def test_every_api_route_answers_huge_numbers_and_duplicate_keys_with_4xx(
    make_account: Callable[..., Funded], method: str, path: str, body: bytes
) -> None:
    # given: authenticated as staff, so every route reaches its body
    funded = make_account(10_000_000, staff=True)
    client = funded.client()
    balance = Account.objects.get(pk=funded.pk).available
    with override_settings(**X402_SETTINGS, FEATURE_NFT=True, FEATURE_ONBOARDING=True):
        # when
        response, elapsed = _timed(lambda: getattr(client, method)(path, data=body, content_type="application/json"))
    # then: never a 5xx; routes that read an amount refuse it with a clear 4xx; nothing spent
    assert response.status_code < 500, response.content
    if path.endswith(("/entries", "/commit", "/pricing/estimate")) or response.status_code >= 400:
        assert 400 <= response.status_code < 500, response.content
        assert set(response.json()) >= {"error", "code"}
    assert elapsed < BOUND_SECONDS
    assert Account.objects.get(pk=funded.pk).available == balance


@pytest.mark.django_db
@pytest.mark.parametrize("step", ["select-nft", "personality"])
def test_onboarding_steps_answer_deep_json_with_400(step: str) -> None:
    # given: a signed-in, allowlisted wallet with an open onboarding session
    client, wallet = signed_in(OWNER)
    allowlist_add(address=wallet, actor="test", now=timezone.now())
    session = client.post("/api/v1/onboarding/start", {}, content_type="application/json").json()["session_id"]
    # when
    response, elapsed = _timed(
        lambda: client.post(f"/api/v1/onboarding/{session}/{step}", data=DEEP, content_type="application/json")
    )
    # then
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_json"
    assert elapsed < BOUND_SECONDS


@pytest.mark.django_db
def test_an_api_body_over_the_limit_is_413(make_account: Callable[..., Funded]) -> None:
    client = make_account(10_000_000).client()
    body = b'{"estimated_cost": 1, "pad": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post("/api/v1/billing/entries", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "version"), [("PAYMENT-SIGNATURE", "2"), ("X-PAYMENT", "1")], ids=["v2-header", "v1-header"]
)
@pytest.mark.parametrize("path", ["/api/v1/x402/invoke", "/api/v1/credits/x402"])
def test_a_payment_header_of_deep_json_is_400_invalid_payment(
    make_account: Callable[..., Funded], header: str, version: str, path: str
) -> None:
    # given: base64 of 5,000 nested arrays (before: RecursionError, 500)
    value = base64.b64encode(b"[" * 5000).decode()
    body = {"model": "echo", "prompt": "hi"} if path.endswith("invoke") else {"pack_size": 500}
    client = make_account().client()
    with override_settings(**X402_SETTINGS):
        # when
        response, elapsed = _timed(
            lambda: client.post(
                path, data=body, content_type="application/json", headers={header: value, "X402-Version": version}
            )
        )
    # then
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_payment"
    assert elapsed < BOUND_SECONDS


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["application/csp-report", "application/reports+json"])
def test_a_csp_report_of_deep_json_is_400(content_type: str) -> None:
    response, elapsed = _timed(
        lambda: Client().post("/api/v1/csp-report", data=b"[" * 10_000, content_type=content_type)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_report"
    assert elapsed < BOUND_SECONDS


def _signed(provider: str, raw: bytes) -> dict[str, str]:
    if provider == "paddle":
        return {"Paddle-Signature": paddle_header(raw)}
    if provider == "stripe":
        return {"Stripe-Signature": stripe_header(raw)}
    return standard_headers(raw, msg_id="msg_deep")


@pytest.mark.django_db
@pytest.mark.parametrize("provider", ["paddle", "stripe", "standard"])
@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECTS], ids=["arrays", "objects"])
def test_a_signed_webhook_of_deep_json_is_400_and_stores_nothing(provider: str, body: bytes) -> None:
    # given: a body the provider's secret signs, so the decoder is what refuses it
    with override_settings(**SECRETS):
        # when
        response, elapsed = _timed(
            lambda: Client().post(
                f"/api/v1/webhooks/{provider}",
                data=body,
                content_type="application/json",
                headers=_signed(provider, body),
            )
        )
    # then
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_event"
    assert elapsed < BOUND_SECONDS
    assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db
def test_a_payment_header_with_non_ascii_text_is_400_not_500() -> None:
    # found by tests/fuzz: base64 of a str with a non-ASCII character raised past the handler
    with override_settings(**X402_SETTINGS):
        response = Client(raise_request_exception=False).post(
            "/api/v1/x402/invoke",
            data={"model": "echo", "prompt": "hi"},
            content_type="application/json",
            headers={"PAYMENT-SIGNATURE": "\x80é=="},
        )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_payment"
