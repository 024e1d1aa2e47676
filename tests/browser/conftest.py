"""A live finn over HTTPS (self-signed) and headless Chromium for the browser tests.

Chromium delivers Reporting API reports (``report-to``) only to HTTPS endpoints,
and the session and CSRF cookies are ``Secure``: the browser tests speak TLS, as
production does.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.servers.basehttp import ThreadedWSGIServer
from django.db import connections
from django.test import override_settings
from django.test.testcases import LiveServerThread


def _certificate(directory: Path) -> tuple[str, str]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture
def https_live_server(tmp_path: Path, transactional_db: Any) -> Iterator[str]:
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class TLSServer(ThreadedWSGIServer):
        # Request threads are joined on close (each closes its database connection when it
        # ends), so the test database is free to be flushed and dropped afterwards.
        daemon_threads = False
        block_on_close = True

        def setup_environ(self) -> None:
            super().setup_environ()
            self.base_environ["HTTPS"] = "on"  # wsgi.url_scheme = https: Django sees a secure request

        def server_activate(self) -> None:
            super().server_activate()
            self.socket = context.wrap_socket(self.socket, server_side=True)

    class TLSLiveServerThread(LiveServerThread):
        server_class = TLSServer

    thread = TLSLiveServerThread("localhost", StaticFilesHandler)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    try:
        yield f"https://localhost:{thread.port}"
    finally:
        thread.terminate()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI});
});
"""


@pytest.fixture
def enforced() -> Iterator[None]:
    policy = settings.CONTENT_SECURITY_POLICY or settings.CONTENT_SECURITY_POLICY_REPORT_ONLY
    with override_settings(CONTENT_SECURITY_POLICY=policy, CONTENT_SECURITY_POLICY_REPORT_ONLY=None):
        yield


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between page steps are ordinary blocking calls (test-only, undone after the test).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    assert os.path.exists(CHROMIUM), "Debian's chromium package is missing (make test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # the test server's certificate is self-signed; reports are delivered at once
            args=["--no-sandbox", "--ignore-certificate-errors", "--short-reporting-delay"],
        )
        context = browser.new_context(ignore_https_errors=True)
        context.add_init_script(COLLECT_VIOLATIONS)
        page = context.new_page()
        page.console_messages = []  # type: ignore[attr-defined]
        page.on("console", lambda message: page.console_messages.append(message.text))  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            browser.close()
            # The test body ran in Playwright's greenlet, which has its own context (and so
            # its own database connection): close it, or the test database stays in use.
            connections.close_all()


def csp_console(page: Any) -> list[str]:
    return [text for text in page.console_messages if "Content Security Policy" in text]
