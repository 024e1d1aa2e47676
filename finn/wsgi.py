"""WSGI entry point: the API's hot routes get a lean middleware stack.

``/api/v1/billing/`` and ``/api/v1/accounts/`` (JSON, API-key or token authenticated,
billed on every inference call) skip the browser machinery — sessions, CSRF, messages,
the CSP and Reporting-Endpoints headers, clickjacking, whitenoise — which costs CPU on
every call and protects nothing there (DRF's views are CSRF-exempt and use no session).
Metrics, request ids, rate-limit headers and the security middleware stay. Everything
else (admin, waitlist, docs, webhooks) gets the full ``MIDDLEWARE``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

from finn.tracing import tracing_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finn.settings")
_full = get_wsgi_application()  # django.setup() happens here


class _ApiHandler(WSGIHandler):
    """Django's handler, built from ``API_MIDDLEWARE`` instead of ``MIDDLEWARE``."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django reads settings.MIDDLEWARE while building the chain; swap the list for the
        # build only (at import, before any request is served).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


_api = _ApiHandler()
_API_PREFIXES = tuple(settings.API_MIDDLEWARE_PREFIXES)
tracing_init()  # each web worker imports this module after its fork (granian, gunicorn)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    handler = _api if environ.get("PATH_INFO", "").startswith(_API_PREFIXES) else _full
    return handler(environ, start_response)
