"""The API's front door in Chromium, the strict policy enforced: the index, Swagger UI, ReDoc.

The documentation is served by finn itself (no CDN: these machines have no internet, as
many deployments' admin networks do not), so a blank page or a single CSP violation fails.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import csp_console

pytestmark = pytest.mark.django_db(transaction=True)


def _no_outside_requests(page: Any, base: str) -> list[str]:
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(base) else outside.append(request.url))
    return outside


def test_swagger_ui_renders_every_operation_under_the_enforced_policy(https_live_server, enforced, page) -> None:
    outside = _no_outside_requests(page, https_live_server)
    # when
    response = page.goto(f"{https_live_server}/api/docs/")
    assert response is not None
    assert response.status == 200
    assert "'nonce-" in response.headers["content-security-policy"]
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    # then: the operation list is in the DOM (the page is not blank), with the money paths
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.dataset.path || e.innerText)")
    assert len(paths) >= 30
    assert "/api/v1/billing/entries/{entry_id}/commit" in paths
    assert page.inner_text(".info .title").startswith("finn billing API")
    png = page.screenshot(full_page=False)
    assert len(png) > 20_000  # a rendered page, not a blank one (a blank 1280x720 PNG is ~4 kB)
    assert page.evaluate("window.__cspViolations") == []
    assert csp_console(page) == []
    assert outside == []


def test_redoc_renders_the_reference_under_the_enforced_policy(https_live_server, enforced, page) -> None:
    outside = _no_outside_requests(page, https_live_server)
    response = page.goto(f"{https_live_server}/api/redoc/")
    assert response is not None
    assert response.status == 200
    page.wait_for_selector("[data-section-id^='operation/']", state="attached", timeout=20_000)
    operations = page.eval_on_selector_all("[data-section-id^='operation/']", "els => els.length")
    assert operations >= 30
    assert "reserve" in page.inner_text("body").lower()
    assert page.evaluate("window.__cspViolations") == []
    assert csp_console(page) == []
    assert outside == []


def test_the_api_index_links_to_the_docs_and_each_link_answers(https_live_server, page) -> None:
    response = page.request.get(f"{https_live_server}/api/v1/")
    assert response.status == 200
    links = response.json()["links"]
    assert {"docs", "redoc", "schema", "health", "entries", "my_balance"} <= links.keys()
    for name in ("docs", "redoc", "schema", "health", "jwks", "models"):
        assert page.request.get(links[name]["href"]).status == 200, name
