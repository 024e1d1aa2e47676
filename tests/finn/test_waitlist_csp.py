"""The waitlist page, its Content-Security-Policy and the CSP report endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings

from finn.models import CspReport, WaitlistSignup

ROOT = Path(__file__).resolve().parents[2]
REPORT = "/api/v1/csp-report"


def _policy(response) -> str:  # type: ignore[no-untyped-def]
    return str(response.headers["Content-Security-Policy-Report-Only"])


@pytest.mark.django_db
def test_the_page_carries_the_strict_policy_with_a_fresh_nonce_each_time() -> None:
    first, second = Client().get("/waitlist/"), Client().get("/waitlist/")
    assert first.status_code == 200
    assert b"Join the waitlist" in first.content
    policy = _policy(first)
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"].startswith("'self' 'nonce-")
    assert directives["style-src"].startswith("'self' 'nonce-")
    assert directives["img-src"] == "'self' data:"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'self'"
    assert directives["form-action"] == "'self'"
    assert directives["report-uri"] == REPORT
    assert directives["report-to"] == "csp-endpoint"
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert first.headers["Reporting-Endpoints"] == 'csp-endpoint="/api/v1/csp-report"'
    assert first.headers["X-Content-Type-Options"] == "nosniff"
    assert first.headers["X-Frame-Options"] == "DENY"
    nonce = directives["script-src"].split("'nonce-")[1].rstrip("'")
    assert f'nonce="{nonce}"'.encode() in first.content
    assert _policy(second) != policy  # a fresh nonce per response
    assert "Content-Security-Policy" not in first.headers  # report-only by default


def test_csp_enforce_switches_to_the_enforcing_header() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s;"
        "print(s.CONTENT_SECURITY_POLICY is not None, s.CONTENT_SECURITY_POLICY_REPORT_ONLY is None)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "finn.settings_test", "CSP_ENFORCE": "true"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True True"


@pytest.mark.django_db
def test_enforced_policy_uses_the_enforcing_header() -> None:
    policy = settings.CONTENT_SECURITY_POLICY_REPORT_ONLY
    with override_settings(CONTENT_SECURITY_POLICY=policy, CONTENT_SECURITY_POLICY_REPORT_ONLY=None):
        response = Client().get("/waitlist/")
    assert "'nonce-" in response.headers["Content-Security-Policy"]
    assert "Content-Security-Policy-Report-Only" not in response.headers


@pytest.mark.django_db
def test_signup_is_stored_normalized_and_a_duplicate_gets_the_same_page() -> None:
    wallet = "0x" + "AB" * 20
    first = Client().post("/waitlist/", {"email": "  Ada@Example.COM ", "wallet": wallet})
    again = Client().post("/waitlist/", {"email": "ada@example.com", "wallet": ""})
    assert first.status_code == again.status_code == 200
    assert b"you are on the list" in first.content
    assert (
        first.content.replace(b"\n", b"").split(b"<main")[1].split(b"nonce")[0]
        == again.content.replace(b"\n", b"").split(b"<main")[1].split(b"nonce")[0]
    )
    signup = WaitlistSignup.objects.get()
    assert (signup.email, signup.wallet) == ("ada@example.com", wallet.lower())


@pytest.mark.django_db
@pytest.mark.parametrize(("email", "wallet"), [("not-an-email", ""), ("a@b.co", "0x123")])
def test_bad_signups_are_400_and_store_nothing(email: str, wallet: str) -> None:
    response = Client().post("/waitlist/", {"email": email, "wallet": wallet})
    assert response.status_code == 400
    assert b'role="alert"' in response.content
    assert not WaitlistSignup.objects.exists()


@pytest.mark.django_db
def test_signup_needs_the_csrf_token() -> None:
    response = Client(enforce_csrf_checks=True).post("/waitlist/", {"email": "a@b.co"})
    assert response.status_code == 403
    assert response.json()["code"] == "csrf_failed"
    assert not WaitlistSignup.objects.exists()


@pytest.mark.django_db
def test_signups_are_rate_limited_per_ip() -> None:
    with override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "waitlist": (2, 60)}):
        codes = [Client().post("/waitlist/", {"email": f"u{i}@example.com"}).status_code for i in range(3)]
    assert codes == [200, 200, 429]
    assert WaitlistSignup.objects.count() == 2


LEGACY = {
    "csp-report": {
        "document-uri": "http://localhost/waitlist/",
        "violated-directive": "script-src-elem",
        "blocked-uri": "inline",
        "disposition": "enforce",
    }
}
MODERN = [
    {
        "type": "csp-violation",
        "url": "http://localhost/waitlist/",
        "body": {
            "documentURL": "http://localhost/waitlist/",
            "effectiveDirective": "style-src-elem",
            "blockedURL": "inline",
        },
    }
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content_type", "body", "directive"),
    [
        ("application/csp-report", LEGACY, "script-src-elem"),
        ("application/json", LEGACY, "script-src-elem"),
        ("application/reports+json", MODERN, "style-src-elem"),
    ],
)
def test_a_valid_report_is_stored_and_answered_204(content_type: str, body: object, directive: str) -> None:
    response = Client().post(REPORT, data=json.dumps(body), content_type=content_type)
    assert response.status_code == 204
    report = CspReport.objects.get()
    assert (report.document_uri, report.violated_directive, report.blocked_uri) == (
        "http://localhost/waitlist/",
        directive,
        "inline",
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("text/plain", json.dumps(LEGACY), 415, "unsupported_media_type"),
        ("application/csp-report", "{not json", 400, "invalid_report"),
        ("application/csp-report", json.dumps({"hello": 1}), 400, "invalid_report"),
        ("application/csp-report", json.dumps({"csp-report": {"x": "y" * 11_000}}), 413, "payload_too_large"),
    ],
)
def test_bad_reports_are_refused_and_nothing_is_stored(content_type: str, body: str, status: int, code: str) -> None:
    response = Client().post(REPORT, data=body, content_type=content_type)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert not CspReport.objects.exists()


@pytest.mark.django_db
def test_reports_are_rate_limited() -> None:
    with override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "csp_report": (1, 60)}):
        codes = [
            Client().post(REPORT, data=json.dumps(LEGACY), content_type="application/csp-report").status_code
            for _ in range(2)
        ]
    assert codes == [204, 429]
