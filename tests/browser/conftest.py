"""A live finn over HTTPS (self-signed) for the browser tests.

Chromium delivers Reporting API reports (``report-to``) only to HTTPS endpoints,
and the session and CSRF cookies are ``Secure``: the browser tests speak TLS, as
production does.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.servers.basehttp import ThreadedWSGIServer
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
