"""A real Celery worker: a lost broker message and a worker killed mid-attempt
delay finalization but never lose it (the entries table is the queue)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone

from billing import services
from billing.finalize import finalize_sweep
from billing.models import BillingEntry
from billing.states import EntryState
from finn.models import AuditEvent
from finn.redis import get_redis
from tests.fakes import Upstream, fake_upstream
from tests.faults.celery_worker import start_worker

ROOT = Path(__file__).resolve().parents[2]


def _worker(upstream: Upstream, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(log, FINALIZE_URL=upstream.url, FINALIZE_LOCK_TTL_SECONDS="2")


def _wait_for(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _state(entry_id: str) -> str:
    return BillingEntry.objects.get(pk=entry_id).state


@pytest.mark.django_db(transaction=True)
def test_lost_message_and_killed_worker_are_recovered_by_the_sweeper(make_account, workers, tmp_path: Path) -> None:
    # given
    funded = make_account(10_000)
    log = tmp_path / "worker.log"
    with fake_upstream(first_delay_seconds=30.0) as upstream, override_settings(FINALIZE_URL=upstream.url):
        now = timezone.now()
        lost = services.entry_reserve(account_id=funded.pk, estimated_cost=1_000, correlation_id="lost", now=now)
        services.entry_commit(entry_id=lost.entry.id, actual_cost=600, now=now)
        # when 1: the wake-up message is lost before any worker runs
        assert get_redis().delete("celery") == 1
        workers.append(_worker(upstream, log))
        time.sleep(3)
        assert _state(lost.entry.id) == EntryState.FINALIZE_PENDING
        # the worker takes the sweeper's message and hangs on the slow upstream; kill it mid-attempt
        assert finalize_sweep(now=timezone.now() + timedelta(minutes=1)).enqueued == 1
        assert _wait_for(lambda: len(upstream.requests) == 1), log.read_text()
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        assert _state(lost.entry.id) == EntryState.FINALIZE_PENDING
        # then: a new worker and the next sweeps finish it, once
        workers.append(_worker(upstream, log))
        beat = iter(range(2, 1000, 2))  # each beat tick is past the previous sweep's 60 s lease

        def tick_and_check() -> bool:
            finalize_sweep(now=timezone.now() + timedelta(minutes=next(beat)))
            time.sleep(0.5)
            return _state(lost.entry.id) == EntryState.FINALIZE_ACKED

        assert _wait_for(tick_and_check, timeout=40), log.read_text()
    assert AuditEvent.objects.filter(billing_entry_id=lost.entry.id, event_type="billing_finalize_ack").count() == 1
