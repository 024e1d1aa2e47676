"""finn behind a real PgBouncer in transaction mode: web, worker and beat, nothing left held.

Before the job leases, one-at-a-time jobs took session-level advisory locks; behind the pooler
the unlock ran on another server connection ("you don't own a lock of type ExclusiveLock"), the
lock stayed on an idle pooled connection, and the hold-expiry sweep skipped every tick from then
on. Here every process connects through PgBouncer (3 server connections, so consecutive
transactions change connections), and the test shows holds expiring, finalize reaching the fake
upstream, reconciliation running, no 5xx on 200 money operations, no advisory lock left once the
processes exit, and the startup refusal of prepared statements behind a pooler.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection

from billing.models import BillingEntry
from billing.selectors import ledger_check
from billing.states import EntryState
from finn.models import AuditEvent
from tests.fakes import fake_upstream
from tests.faults.celery_worker import start_worker
from tests.faults.servers import ThrowawayPgBouncer, free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="PgBouncer runs as postgres: needs root to switch")


@pytest.fixture
def pgbouncer(transactional_db: Any) -> Iterator[ThrowawayPgBouncer]:
    bouncer = ThrowawayPgBouncer(database=connection.settings_dict["NAME"])
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


_THROUGH_THE_POOLER = ("DATABASE_URL", "DB_POOLER", "FINALIZE_URL", "RECONCILIATION_INTERVAL_SECONDS")


def _env(bouncer: ThrowawayPgBouncer, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "finn.settings_test",
        "DATABASE_URL": bouncer.url,
        "DB_POOLER": "transaction",
        "REDIS_URL": settings.REDIS_URL,
        **extra,
    }


def _advisory_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        return int(cursor.fetchone()[0])


def test_prepared_statements_behind_a_pooler_refuse_to_start(pgbouncer: ThrowawayPgBouncer) -> None:
    # when
    completed = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_env(pgbouncer, DB_PREPARED_STATEMENTS="true"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then
    assert completed.returncode != 0
    assert "DB_PREPARED_STATEMENTS=true cannot work behind a transaction-mode pooler" in completed.stderr


def test_web_worker_and_beat_run_every_job_through_the_pooler(
    pgbouncer: ThrowawayPgBouncer, make_account: Callable[..., Any], tmp_path: Path
) -> None:
    # given: a funded account; web, worker and beat all through PgBouncer
    funded = make_account(10**10)
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    with fake_upstream() as upstream:
        env = _env(
            pgbouncer,
            FINALIZE_URL=upstream.url,
            RECONCILIATION_INTERVAL_SECONDS="2",
            FINN_BIND=f"127.0.0.1:{port}",
            WEB_CONCURRENCY="2",
            WEB_THREADS="4",
        )
        web_log, worker_log, beat_log = (tmp_path / name for name in ("web.log", "worker.log", "beat.log"))
        try:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "finn.wsgi", "--config", "gunicorn.conf.py"],
                    cwd=ROOT,
                    env=env,
                    stdout=web_log.open("w"),
                    stderr=subprocess.STDOUT,
                )
            )
            processes.append(start_worker(worker_log, **{k: env[k] for k in _THROUGH_THE_POOLER}))
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "finn", "beat", "-l", "INFO", "-s", str(tmp_path / "beat")],
                    cwd=ROOT,
                    env=env,
                    stdout=beat_log.open("w"),
                    stderr=subprocess.STDOUT,
                )
            )
            base = f"http://127.0.0.1:{port}"
            wait_http_ok(f"{base}/health")
            headers = {"Authorization": f"Bearer {funded.key}"}

            def reserve(ttl: int) -> httpx.Response:
                return httpx.post(
                    f"{base}/api/v1/billing/entries",
                    json={"estimated_cost": 1_000, "ttl_seconds": ttl},
                    headers=headers,
                    timeout=30,
                )

            def reserve_and_commit(_: int) -> tuple[int, int]:
                held = reserve(300)
                if held.status_code != 201:
                    return held.status_code, 0
                entry = held.json()["entry"]["id"]
                committed = httpx.post(
                    f"{base}/api/v1/billing/entries/{entry}/commit", json={"actual_cost": 600}, headers=headers
                )
                return held.status_code, committed.status_code

            # when: ten one-second holds left to expire, and 100 reserve + commit pairs, 8 at a time
            holds = [reserve(1).json()["entry"]["id"] for _ in range(10)]
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(reserve_and_commit, range(100)))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                released = BillingEntry.objects.filter(pk__in=holds, state=EntryState.RELEASED).count()
                acked = BillingEntry.objects.filter(state=EntryState.FINALIZE_ACKED).count()
                reconciled = AuditEvent.objects.filter(event_type="billing_reconciliation").exists()
                if released == 10 and acked == 100 and reconciled:
                    break
                time.sleep(0.5)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
    logs = "".join(path.read_text() for path in (web_log, worker_log, beat_log))
    # then: no 5xx, every hold expired, every commit finalized once, reconciliation ran
    assert answers == [(201, 200)] * 100, logs[-5_000:]
    assert released == 10, logs[-5_000:]
    assert acked == 100, logs[-5_000:]
    assert len(upstream.requests) == 100
    assert reconciled, logs[-5_000:]
    assert "don't own a lock" not in logs
    assert "prepared statement" not in logs
    assert "Traceback" not in logs, logs[-5_000:]
    # and nothing is left held on any server connection once the processes are gone
    assert _advisory_locks() == 0
    assert ledger_check().ok
