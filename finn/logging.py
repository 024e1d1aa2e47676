"""Request and correlation ids for structured logs.

A request id identifies one HTTP request; a correlation id follows one
business flow across requests and Celery tasks (clients may send their own in
``X-Correlation-ID``). Both live in context variables so every log line made
while handling the request carries them, whichever thread or module logs.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# Ids from clients are echoed in headers and logs: keep them short and plain.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _clean_id(raw: str | None) -> str | None:
    if raw and _SAFE_ID.match(raw):
        return raw
    return None


def current_correlation_id() -> str:
    """The correlation id of the running request or task, or a new one."""
    return correlation_id_var.get() or uuid.uuid4().hex


@contextmanager
def log_context(*, request_id: str | None = None, correlation_id: str | None = None) -> Iterator[None]:
    """Bind ids for code running outside a request (tasks, commands)."""
    tokens = (request_id_var.set(request_id), correlation_id_var.set(correlation_id))
    try:
        yield
    finally:
        request_id_var.reset(tokens[0])
        correlation_id_var.reset(tokens[1])


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.correlation_id = correlation_id_var.get()
        return True


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = _clean_id(request.headers.get("X-Request-ID")) or uuid.uuid4().hex
        correlation_id = _clean_id(request.headers.get("X-Correlation-ID")) or request_id
        # Not reset on return: Django logs the response (django.request) after
        # the middleware chain; request_finished clears the ids instead.
        request_id_var.set(request_id)
        correlation_id_var.set(correlation_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        response["X-Correlation-ID"] = correlation_id
        return response


def _clear_request_context(**kwargs: object) -> None:
    request_id_var.set(None)
    correlation_id_var.set(None)


request_finished.connect(_clear_request_context, dispatch_uid="finn.logging.clear_request_context")
