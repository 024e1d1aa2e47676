"""schemathesis over the whole OpenAPI schema, against finn as it is deployed (gunicorn, finn.wsgi).

Every operation of ``/api/schema/`` is fuzzed (examples, coverage, fuzzing and stateful phases)
with an API key of a funded account, once with every feature flag on and once with every flag
off, and each answer is held to ``not_a_server_error`` and the response-schema checks
(status code, content type, headers and body as documented). A disabled feature is a 404, not
an outage, and every answer finn gives is in its schema.

Short rounds here (``make test``); ``make fuzz`` sets ``FINN_FUZZ_PROFILE=long``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from billing.wal import rebuild_balances
from finn.audit_chain import audit_chain, audit_verify
from finn.flags import FLAGS, feature_flag_set
from tests.faults.celery_worker import finn_env
from tests.faults.servers import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)
# Examples per operation, and the seed (fixed in the suite, so a failure reproduces).
ROUNDS = {"ci": 25, "long": 2_000}
TIMEOUT = {"ci": 240, "long": 4 * 3600}
PROFILE = os.environ.get("FINN_FUZZ_PROFILE", "ci")
SEED = int(os.environ.get("FINN_FUZZ_SEED", "18"))


@pytest.fixture
def finn_server(tmp_path: Path, transactional_db: Any) -> Iterator[str]:
    """finn under gunicorn on a spare port, on the test database; its log in ``tmp_path``."""
    port = free_port()
    env = finn_env(FINN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", WEB_THREADS="4")
    log = tmp_path / "web.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "finn.wsgi", "--config", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{base}/health")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _schemathesis(base: str, key: str, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{base}/api/schema/",
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {key}",
            "--max-examples",
            str(ROUNDS[PROFILE]),
            "--seed",
            str(SEED),
            # One worker: CPython 3.11's ast.parse is not thread-safe, and hypothesis calls it to
            # describe filters ("AST constructor recursion depth mismatch" with two).
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--max-response-time",
            "5",
            "--generation-database",
            "none",
            "--report",
            "junit",
            "--report-dir",
            str(report),
            "--no-color",
        ],
        cwd=report.parent,  # its cache directory goes there, not into the checkout
        capture_output=True,
        text=True,
        timeout=TIMEOUT[PROFILE],
    )


@pytest.mark.parametrize(
    ("flags_on", "staff"),
    [(True, False), (False, False), (True, True)],
    ids=["flags-on", "flags-off", "flags-on-staff"],
)
def test_no_operation_answers_5xx_or_outside_its_schema(
    flags_on: bool, staff: bool, finn_server: str, make_account: Callable[..., Any], tmp_path: Path
) -> None:
    # given: every flag on (or off), and a funded account (or a finance staff key: void, finalize, replay)
    for name in FLAGS:
        feature_flag_set(name=name, enabled=flags_on, actor="test", now=timezone.now())
    funded = make_account(10**12, staff=staff)
    # when
    result = _schemathesis(finn_server, funded.key, tmp_path / "report")
    # then: no 5xx, every answer as documented, nothing in finn's log but refusals
    log = (tmp_path / "web.log").read_text()
    (tmp_path / "schemathesis.txt").write_text(result.stdout)
    report = f"{result.stdout[-20_000:]}\n{result.stderr[-5_000:]}\n--- finn log ---\n{log[-5_000:]}"
    assert result.returncode == 0, report
    assert " passed" in result.stdout, report
    assert "Traceback" not in log, log[-10_000:]
    # and the money the fuzzer moved is all accounted for (the ledger check runs after every test too)
    assert rebuild_balances(now=timezone.now()).differences == []
    audit_chain(lag_seconds=0)
    verified = audit_verify()
    assert verified.ok, verified.problem
