"""Webhook endpoints: verify on the raw body, store, enqueue on commit, answer.

Plain Django views (not DRF): the signature covers the exact bytes received,
so nothing may parse or re-serialize the body before verification.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.metrics import rejected
from finn import clock
from finn.degradation import ServiceUnavailable
from finn.ratelimit import client_ip, rate_limit_hit
from finn.untrusted_json import UntrustedJsonError, json_loads_untrusted
from webhooks.adapters import (
    InvalidEvent,
    NormalizedEvent,
    SignatureError,
    normalize_paddle,
    normalize_standard,
    normalize_stripe,
    verify_paddle,
    verify_standard,
    verify_stripe,
)
from webhooks.services import webhook_receive

MAX_BODY_BYTES = 1024 * 1024


def _error(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    return JsonResponse({"error": message, "code": code, **extra}, status=status)


def _unavailable(exc: ServiceUnavailable) -> JsonResponse:
    response = JsonResponse(exc.body(), status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def _receive(
    request: HttpRequest,
    provider: str,
    secret: str,
    verify: Callable[[bytes], None],
    normalize: Callable[[object], NormalizedEvent],
) -> JsonResponse:
    if not secret:
        return _error(404, "provider_not_configured", f"{provider} webhooks are not configured")
    if request.content_type != "application/json":
        return _error(400, "unsupported_media_type", "Content-Type must be application/json")
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > MAX_BODY_BYTES:
        return _error(413, "payload_too_large", "webhook bodies are limited to 1 MiB")
    # The route needs the distributed lock downstream: fail closed while Redis is down.
    try:
        decision = rate_limit_hit(tier="webhook", identity=client_ip(request), subsystem="webhooks")
    except ServiceUnavailable as exc:
        return _unavailable(exc)
    if not decision.allowed:
        response = _error(429, "rate_limited", "too many webhook requests")
        response["Retry-After"] = str(decision.retry_after)
        return response
    raw = request.body
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, "payload_too_large", "webhook bodies are limited to 1 MiB")
    try:
        verify(raw)
    except SignatureError as exc:
        rejected(exc.code)
        return _error(400, exc.code, exc.message)
    try:
        event = normalize(json_loads_untrusted(raw, max_bytes=MAX_BODY_BYTES))
    except (UntrustedJsonError, InvalidEvent) as exc:
        return _error(400, "invalid_event", f"the event body is not a valid {provider} event: {exc}"[:300])
    receipt = webhook_receive(provider=provider, event=event, now=clock.now())
    return JsonResponse({"received": True, "status": receipt.status, "event_id": receipt.event_id})


@csrf_exempt
@require_POST
def paddle(request: HttpRequest) -> JsonResponse:
    secret = settings.PADDLE_WEBHOOK_SECRET
    return _receive(
        request,
        "paddle",
        secret,
        lambda raw: verify_paddle(
            raw,
            request.headers.get("Paddle-Signature"),
            secret,
            now=clock.time(),
            tolerance=settings.WEBHOOK_TOLERANCE_SECONDS,
        ),
        normalize_paddle,
    )


@csrf_exempt
@require_POST
def stripe(request: HttpRequest) -> JsonResponse:
    secret = settings.STRIPE_WEBHOOK_SECRET
    return _receive(
        request,
        "stripe",
        secret,
        lambda raw: verify_stripe(
            raw,
            request.headers.get("Stripe-Signature"),
            secret,
            now=clock.time(),
            tolerance=settings.WEBHOOK_TOLERANCE_SECONDS,
        ),
        normalize_stripe,
    )


@csrf_exempt
@require_POST
def standard(request: HttpRequest) -> JsonResponse:
    secret = settings.STANDARD_WEBHOOK_SECRET
    return _receive(
        request,
        "standard",
        secret,
        lambda raw: verify_standard(
            raw,
            webhook_id=request.headers.get("webhook-id"),
            timestamp=request.headers.get("webhook-timestamp"),
            header=request.headers.get("webhook-signature"),
            secret=secret,
            now=clock.time(),
            tolerance=settings.WEBHOOK_TOLERANCE_SECONDS,
        ),
        lambda body: normalize_standard(
            body,
            webhook_id=request.headers.get("webhook-id"),
            webhook_timestamp=request.headers.get("webhook-timestamp"),
        ),
    )
