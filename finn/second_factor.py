"""The admin's second factor: TOTP (django-otp) before any action that moves money or changes policy.

A password opens the admin; it does not move money. Every admin action that changes money or
policy — finalize and void entries, replay poison entries or webhook events, edit feature flags
or the beta allowlist, issue, revoke or re-limit API keys — calls :func:`money_action_refused`
first. It re-checks the permission on the server (whatever the page showed) and refuses, with a
403 page that links to the verification form, a session that has not been verified with a TOTP
token in this login (``request.user.is_verified()``, set by ``django_otp.login``).

Devices are enrolled out of band by an operator (``manage.py finn_otp_enroll <username>``), never
from the admin itself: a second factor that a stolen password could enroll is not a second factor.
Token guesses are throttled by django-otp (exponential delay per device, stored in Postgres), and
the password form by django-axes (database handler), so both keep working with Redis down.

The audit rows a verified action writes carry who, from where and how (:func:`admin_audit_context`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import django_otp
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_otp.plugins.otp_totp.models import TOTPDevice

from finn.audit import audit_context
from finn.ratelimit import client_ip

TOKEN_MAX_LENGTH = 16


def is_verified(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_authenticated and getattr(user, "is_verified", lambda: False)())


def money_action_refused(request: HttpRequest, permission: str) -> HttpResponse | None:
    """None when the user may run the action now; otherwise the 403 page to answer with."""
    if not (request.user.is_authenticated and request.user.is_staff and request.user.has_perm(permission)):
        return _refusal(request, "You do not have the permission for this action.", need_token=False)
    if not is_verified(request):
        return _refusal(request, "This action needs your second factor.", need_token=True)
    return None


def _refusal(request: HttpRequest, message: str, *, need_token: bool) -> HttpResponse:
    verify_url = reverse("admin-second-factor") + "?next=" + quote(request.get_full_path(), safe="/")
    context = {"title": "Refused", "message": message, "need_token": need_token, "verify_url": verify_url}
    return TemplateResponse(request, "admin/second_factor_refused.html", context, status=403)


@contextmanager
def admin_audit_context(request: HttpRequest) -> Iterator[None]:
    """Audit rows written inside carry the admin's username, IP and how they were verified."""
    device = getattr(request.user, "otp_device", None)
    with audit_context(
        {
            "actor": request.user.get_username(),
            "ip": client_ip(request),
            "second_factor": "totp" if isinstance(device, TOTPDevice) else "",
        }
    ):
        yield


@never_cache
@csrf_protect
@staff_member_required
def second_factor_verify(request: HttpRequest) -> HttpResponse:
    """Ask for a TOTP token; on success the session is verified until logout."""
    next_url = request.POST.get("next") or request.GET.get("next") or "/admin/"
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}, require_https=False):
        next_url = "/admin/"
    has_device = TOTPDevice.objects.filter(user=request.user, confirmed=True).exists()
    error = ""
    if request.method == "POST" and has_device:
        token = (request.POST.get("otp_token") or "").strip()[:TOKEN_MAX_LENGTH]
        device = django_otp.match_token(request.user, token) if token.isdigit() else None
        if device is not None:
            django_otp.login(request, device)
            return HttpResponseRedirect(next_url)
        error = "That code is not valid (or too many wrong codes: wait a moment and try the current one)."
    context = {
        "title": "Second factor",
        "has_device": has_device,
        "verified": is_verified(request),
        "error": error,
        "next": next_url,
        "username": request.user.get_username(),
    }
    return TemplateResponse(request, "admin/second_factor.html", context, status=200 if not error else 400)


def axes_client_ip(request: HttpRequest) -> str | None:
    """django-axes' client address: the one finn's rate limits use, or None when it has none."""
    address = client_ip(request)
    return None if address == "unknown" else address
