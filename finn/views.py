"""Operational endpoints: /health."""

from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

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
