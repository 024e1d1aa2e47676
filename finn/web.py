"""Browser-facing pages: the waitlist, and the CSP violation report endpoint."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from finn import clock
from finn.errors import InvalidRequest
from finn.ratelimit import client_ip, rate_limit_hit
from finn.services import csp_reports_record, csp_violations_parse, waitlist_signup
from finn.untrusted_json import UntrustedJsonError, json_loads_untrusted

CSP_REPORT_MAX_BYTES = 10 * 1024
CSP_REPORT_TYPES = ("application/csp-report", "application/reports+json", "application/json")
REPORTING_ENDPOINTS = 'csp-endpoint="/api/v1/csp-report"'


class ReportingEndpointsMiddleware:
    """Names the endpoint the policy's ``report-to csp-endpoint`` sends to."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Reporting-Endpoints", REPORTING_ENDPOINTS)
        return response


def _page(request: HttpRequest, *, status: int = 200, **context: object) -> HttpResponse:
    base = {
        "project_name": settings.WAITLIST_PROJECT_NAME,
        "description": settings.WAITLIST_DESCRIPTION,
        "contact_email": settings.WAITLIST_CONTACT_EMAIL,
    }
    return render(request, "waitlist.html", {**base, **context}, status=status)


@require_http_methods(["GET", "POST"])
def waitlist(request: HttpRequest) -> HttpResponse:
    """The waitlist page; a POST signs up (a known address gets the same thanks)."""
    if request.method == "GET":
        return _page(request)
    decision = rate_limit_hit(tier="waitlist", identity=client_ip(request))
    if not decision.allowed:
        response = _page(request, status=429, error="Too many signups from here; please try again in a minute.")
        response["Retry-After"] = str(decision.retry_after)
        return response
    email = str(request.POST.get("email", ""))[:254]
    wallet = str(request.POST.get("wallet", ""))[:64]
    try:
        waitlist_signup(email=email, wallet=wallet, now=clock.now())
    except InvalidRequest as exc:
        return _page(request, status=400, error=exc.message, email=email, wallet=wallet)
    return _page(request, thanks=True)


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": message, "code": code}, status=status)


@csrf_exempt
@require_POST
def csp_report(request: HttpRequest) -> HttpResponse:
    """Store CSP violation reports (legacy and Reporting API); 204."""
    if request.content_type not in CSP_REPORT_TYPES:
        return _error(415, "unsupported_media_type", "send application/csp-report or application/reports+json")
    if int(request.META.get("CONTENT_LENGTH") or 0) > CSP_REPORT_MAX_BYTES:
        return _error(413, "payload_too_large", "reports are limited to 10 KiB")
    decision = rate_limit_hit(tier="csp_report", identity=client_ip(request))
    if not decision.allowed:
        response = _error(429, "rate_limited", "too many reports")
        response["Retry-After"] = str(decision.retry_after)
        return response
    raw = request.read(CSP_REPORT_MAX_BYTES + 1)  # never more than the limit, whatever was declared
    if len(raw) > CSP_REPORT_MAX_BYTES:
        return _error(413, "payload_too_large", "reports are limited to 10 KiB")
    try:
        body = json_loads_untrusted(raw, max_bytes=CSP_REPORT_MAX_BYTES)
    except UntrustedJsonError:
        return _error(400, "invalid_report", "the report is not valid JSON")
    violations = csp_violations_parse(body)
    if not violations:
        return _error(400, "invalid_report", "no csp-report object or csp-violation report in the body")
    csp_reports_record(violations=violations, now=clock.now())
    return HttpResponse(status=204)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """403 for a missing or bad CSRF token (Django's own page has an inline style the policy blocks)."""
    return _error(403, "csrf_failed", "CSRF verification failed; reload the page and try again")
