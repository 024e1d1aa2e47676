"""Operational endpoints: /health."""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView
from prometheus_client import Counter

from finn.degradation import degraded_total, fail_closed_total, lock_fallbacks_total, monitor
from finn.redis import get_redis

logger = logging.getLogger(__name__)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "down"
        logger.warning("health: database check failed", extra={"error": type(exc).__name__})
        return "down"
    return "ok"


def _check_redis() -> str:
    try:
        get_redis().ping()
    except Exception as exc:  # any client error means "down"
        logger.warning("health: redis check failed", extra={"error": type(exc).__name__})
        return "down"
    return "ok"


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """200 when PostgreSQL and Redis both answer, 503 (with which one) when not."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503
    )


def _counter_total(counter: Counter) -> float:
    """Sum of a counter over all its labels, through the public collect() API."""
    return sum(s.value for metric in counter.collect() for s in metric.samples if s.name.endswith("_total"))


@require_GET
def health_security(request: HttpRequest) -> JsonResponse:
    """Dependencies of the fail-closed routes: 503 naming the one that is down."""
    redis_state = monitor.state
    if redis_state == "CLOSED":
        redis_status = _check_redis()
        if redis_status != "ok":
            monitor.record_failure()
    else:
        redis_status = "down"
    checks = {"database": _check_database(), "redis": redis_status}
    healthy = all(value == "ok" for value in checks.values())
    body = {
        "status": "ok" if healthy else "unavailable",
        "checks": checks,
        "redis_monitor": redis_state,
        "counters": {
            "fail_closed_503_total": _counter_total(fail_closed_total),
            "lock_fallbacks_total": _counter_total(lock_fallbacks_total),
            "degraded_total": _counter_total(degraded_total),
        },
    }
    return JsonResponse(body, status=200 if healthy else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, behind METRICS_BEARER_TOKEN and/or METRICS_ALLOWED_IPS when set."""
    allowed_ips = settings.METRICS_ALLOWED_IPS
    if allowed_ips and request.META.get("REMOTE_ADDR") not in allowed_ips:
        return JsonResponse({"error": "not allowed from this address", "code": "permission_denied"}, status=403)
    token = settings.METRICS_BEARER_TOKEN
    if token:
        given = (request.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            response = JsonResponse({"error": "a bearer token is required", "code": "not_authenticated"}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return ExportToDjangoView(request)
