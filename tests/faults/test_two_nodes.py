"""Two complete finn nodes on one PostgreSQL and Redis: every beat job twice, every effect once.

Each node is web (gunicorn) + Celery worker + Celery beat on its own port, as when a deployment
outgrows one box and runs the same stack twice. Both beats send every periodic job; the job
leases let one node run each at a time and the rows' compare-and-set decides every effect. Under
mixed load on both nodes: each expired hold is released once, each commit finalized once (one
upstream call, one ack), a cache divergence is corrected once, and the ledger and the audit chain
verify.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db.models import Count

from billing.cache import balance_cache_key
from billing.models import BillingEntry
from billing.selectors import ledger_check
from billing.states import EntryState
from finn.audit_chain import audit_chain, audit_verify
from finn.models import AuditEvent
from finn.redis import get_redis
from tests.fakes import fake_upstream
from tests.faults.celery_worker import finn_env
from tests.faults.servers import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]


def _node(name: str, tmp_path: Path, **env: str) -> tuple[str, list[subprocess.Popen[bytes]]]:
    port = free_port()
    full = finn_env(FINN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", WEB_THREADS="4", **env)
    commands = {
        "web": [sys.executable, "-m", "gunicorn", "finn.wsgi", "--config", "gunicorn.conf.py"],
        "worker": [sys.executable, "-m", "celery", "-A", "finn", "worker", "-P", "solo", "-c", "1", "-l", "INFO",
                   "-n", f"{name}@%h", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        "beat": [sys.executable, "-m", "celery", "-A", "finn", "beat", "-l", "INFO",
                 "-s", str(tmp_path / f"{name}-beat")],
    }  # fmt: skip
    processes = [
        subprocess.Popen(
            command, cwd=ROOT, env=full, stdout=(tmp_path / f"{name}-{role}.log").open("w"), stderr=subprocess.STDOUT
        )
        for role, command in commands.items()
    ]
    return f"http://127.0.0.1:{port}", processes


@pytest.mark.django_db(transaction=True)
def test_two_nodes_run_every_job_twice_and_every_effect_once(make_account: Callable[..., Any], tmp_path: Path) -> None:
    # given: two complete stacks
    funded = make_account(10**10)
    headers = {"Authorization": f"Bearer {funded.key}"}
    processes: list[subprocess.Popen[bytes]] = []
    with fake_upstream() as upstream:
        try:
            bases = []
            for name in ("node-a", "node-b"):
                base, started = _node(name, tmp_path, FINALIZE_URL=upstream.url, RECONCILIATION_INTERVAL_SECONDS="1")
                bases.append(base)
                processes += started
            for base in bases:
                wait_http_ok(f"{base}/health")

            def reserve(base: str, ttl: int) -> str:
                answer = httpx.post(
                    f"{base}/api/v1/billing/entries",
                    json={"estimated_cost": 1_000, "ttl_seconds": ttl},
                    headers=headers,
                    timeout=30,
                )
                assert answer.status_code == 201, answer.text
                return str(answer.json()["entry"]["id"])

            def billed(index: int) -> int:
                base = bases[index % 2]
                entry = reserve(base, 300)
                return httpx.post(
                    f"{base}/api/v1/billing/entries/{entry}/commit", json={"actual_cost": 700}, headers=headers
                ).status_code

            # when: mixed load on both nodes, then a cache divergence for reconciliation to find
            holds = [reserve(bases[i % 2], 1) for i in range(20)]
            with ThreadPoolExecutor(8) as pool:
                commits = list(pool.map(billed, range(40)))
            time.sleep(1)
            get_redis().hset(balance_cache_key(funded.pk), "available", "1")
            diverged_after = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                released = BillingEntry.objects.filter(pk__in=holds, state=EntryState.RELEASED).count()
                acked = BillingEntry.objects.filter(state=EntryState.FINALIZE_ACKED).count()
                corrections = AuditEvent.objects.filter(
                    sequence__gt=diverged_after,
                    event_type="billing_reconciliation",
                    account_id=funded.pk,
                    payload__correction_type="RECONCILIATION_CORRECTION",
                ).count()
                if released == 20 and acked == 40 and corrections:
                    time.sleep(3)  # a few more ticks of both beats, to catch a second effect
                    break
                time.sleep(0.5)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
    logs = {path.name: path.read_text() for path in tmp_path.glob("*.log")}
    # then: both nodes' beats sent the jobs, their workers ran them
    assert commits == [200] * 40
    for name in ("node-a", "node-b"):
        assert "hold-expiry-sweep" in logs[f"{name}-beat.log"]
        assert "succeeded" in logs[f"{name}-worker.log"]
    # each effect once
    assert released == 20
    expired = AuditEvent.objects.filter(event_type="billing_reserve_expired", billing_entry_id__in=holds)
    assert expired.count() == 20
    assert acked == 40
    acks = AuditEvent.objects.filter(event_type="billing_finalize_ack").values("billing_entry_id")
    assert not acks.annotate(n=Count("sequence")).filter(n__gt=1).exists()
    assert len(upstream.requests) == 40
    corrections = AuditEvent.objects.filter(
        sequence__gt=diverged_after,
        event_type="billing_reconciliation",
        account_id=funded.pk,
        payload__correction_type="RECONCILIATION_CORRECTION",
    ).count()
    assert corrections == 1
    assert get_redis().hget(balance_cache_key(funded.pk), "available") != "1"
    # and the books: the ledger balances, the chain links and verifies
    assert ledger_check().ok
    audit_chain(lag_seconds=0)
    assert audit_verify().ok
    assert not any("Traceback" in text for text in logs.values()), {k: v[-3_000:] for k, v in logs.items()}
