"""The WSGI app serves the billing API through a lean middleware stack, everything else through the full one."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from finn.wsgi import application


def _call(
    method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "HTTP_HOST": "testserver",
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    captured: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"] = status
        captured["headers"] = {k.lower(): v for k, v in response_headers}

    content = b"".join(application(environ, start_response))
    return captured["status"], captured["headers"], content


@pytest.mark.django_db(transaction=True)
def test_billing_routes_skip_the_browser_middleware(make_account) -> None:
    # given
    funded = make_account(10_000)
    body = json.dumps({"estimated_cost": 100}).encode()
    # when
    status, headers, content = _call(
        "POST", "/api/v1/billing/entries", body=body, headers={"Authorization": f"Bearer {funded.key}"}
    )
    # then: served, with request ids and rate-limit headers, without CSP, session or CSRF work
    assert status.startswith("201"), content
    assert json.loads(content)["entry"]["state"] == "RESERVE_HELD"
    assert {"x-request-id", "x-ratelimit-limit", "x-content-type-options"} <= set(headers)
    assert not {"content-security-policy", "content-security-policy-report-only", "set-cookie"} & set(headers)
    assert "reporting-endpoints" not in headers
    assert "x-frame-options" not in headers


@pytest.mark.django_db(transaction=True)
def test_other_routes_keep_the_full_stack() -> None:
    status, headers, _ = _call("GET", "/waitlist/")
    assert status.startswith("200")
    assert "content-security-policy-report-only" in headers or "content-security-policy" in headers
    assert headers.get("x-frame-options") == "DENY"
