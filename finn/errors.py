"""Domain errors and the one place they become HTTP responses.

Services raise ``DomainError`` subclasses carrying a stable machine code and
an HTTP status; views never build error responses by hand. Every error body
is ``{"error": <message>, "code": <code>, ...extra}``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """A refusal the client can act on; carries code, status and extras."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.extra}


class InvalidRequest(DomainError):
    code = "invalid_request"
    status = 400


class NotFound(DomainError):
    code = "not_found"
    status = 404


class Forbidden(DomainError):
    code = "permission_denied"
    status = 403


class Conflict(DomainError):
    code = "conflict"
    status = 409


def error_response(exc: DomainError) -> Response:
    return Response(exc.body(), status=exc.status, headers=exc.headers or None)


def _first_code(detail: Any) -> str | None:
    """The first error code in a DRF detail structure (dict/list/ErrorDetail)."""
    if isinstance(detail, dict):
        for value in detail.values():
            code = _first_code(value)
            if code:
                return code
        return None
    if isinstance(detail, list):
        for value in detail:
            code = _first_code(value)
            if code:
                return code
        return None
    return getattr(detail, "code", None)


def _flatten_fields(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(k): [str(v) for v in (val if isinstance(val, list) else [val])] for k, val in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": [str(v) for v in detail]}
    return {"non_field_errors": [str(detail)]}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every refusal becomes ``{"error", "code"}``."""
    if isinstance(exc, DomainError):
        return error_response(exc)
    if isinstance(exc, drf_exceptions.ValidationError):
        fields = _flatten_fields(exc.detail)
        field_code = _first_code(exc.detail)
        first_field, messages = next(iter(fields.items()))
        message = f"{first_field}: {messages[0]}" if first_field != "non_field_errors" else messages[0]
        body = {"error": message, "code": "invalid_request", "fields": fields}
        if field_code and field_code not in {"invalid", "required", "null", "blank"}:
            body["reason"] = field_code
        return Response(body, status=400)
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        # The API speaks JSON only; a wrong content type is a client error
        # like any other bad input, so it gets a 400 with its own code.
        return Response(
            {"error": "Content-Type must be application/json", "code": "unsupported_media_type"},
            status=400,
        )
    if isinstance(exc, drf_exceptions.ParseError):
        return Response({"error": "request body is not valid JSON", "code": "malformed_json"}, status=400)
    if isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        return Response(
            {"error": str(exc.detail), "code": "not_authenticated"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="finn"'},
        )
    if isinstance(exc, drf_exceptions.PermissionDenied):
        return Response({"error": str(exc.detail), "code": "permission_denied"}, status=403)
    if isinstance(exc, drf_exceptions.NotFound):
        return Response({"error": "not found", "code": "not_found"}, status=404)
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return Response({"error": str(exc.detail), "code": "method_not_allowed"}, status=405)
    if isinstance(exc, drf_exceptions.Throttled):
        wait = exc.detail and getattr(exc, "wait", None)
        headers = {"Retry-After": str(wait)} if wait else None
        return Response({"error": str(exc.detail), "code": "rate_limited"}, status=429, headers=headers)
    if isinstance(exc, drf_exceptions.APIException):
        return Response({"error": str(exc.detail), "code": exc.default_code}, status=exc.status_code)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database connection broke (restart, failover): nothing was committed by this
        # request's failed statement; Django drops the connection at the request's end.
        logger.warning("database unavailable", extra={"error": type(exc).__name__})
        return Response(
            {"error": "the database is unavailable; retry shortly", "code": "database_unavailable"},
            status=503,
            headers={"Retry-After": "1"},
        )
    return None


def json_404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"error": "not found", "code": "not_found"}, status=404)


def json_500(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"error": "internal error", "code": "internal_error"}, status=500)
