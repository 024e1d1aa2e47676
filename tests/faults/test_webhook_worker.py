"""A real Celery worker killed in the middle of a webhook's transaction:
after a restart the event is processed exactly once."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.test import Client, override_settings
from django.utils import timezone

from billing.models import Account
from tests.faults.celery_worker import start_worker
from tests.webhooks.helpers import SECRETS, paddle_event, post_paddle
from webhooks.models import WebhookEvent
from webhooks.services import webhook_sweep

ROOT = Path(__file__).resolve().parents[2]


def _worker(log: Path) -> subprocess.Popen[bytes]:
    return start_worker(log, WEBHOOK_LOCK_SECONDS="2")


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_event_processes_it_exactly_once_after_restart(make_account, tmp_path: Path) -> None:
    # given: an accepted credit-pack event, and the account row locked by someone else
    funded = make_account(0)
    raw = paddle_event(
        "transaction.completed",
        {"id": "txn_kill", "custom_data": {"type": "credit_pack", "account_id": str(funded.pk), "pack_size": "500"}},
        event_id="evt_kill",
    )
    with override_settings(**SECRETS):
        assert post_paddle(Client(), raw).json()["status"] == "accepted"
    blocker = connections.create_connection("default")
    blocker.set_autocommit(False)
    with blocker.cursor() as cursor:
        cursor.execute("SELECT id FROM billing_account WHERE id = %s FOR UPDATE", [funded.pk])
    log = tmp_path / "worker.log"
    workers = [_worker(log)]
    try:
        # when: the worker is inside the handler's transaction, waiting on the row; kill it
        time.sleep(4)
        assert WebhookEvent.objects.get().status == "pending", log.read_text()
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        blocker.rollback()
        blocker.close()
        # then: a new worker and the sweeper finish it, once
        workers.append(_worker(log))
        deadline = time.monotonic() + 40
        step = 1
        while time.monotonic() < deadline and WebhookEvent.objects.get().status != "processed":
            webhook_sweep(now=timezone.now() + timedelta(minutes=3 * step))
            step += 1
            time.sleep(1)
        assert WebhookEvent.objects.get().status == "processed", log.read_text()
        assert Account.objects.get(pk=funded.pk).available == 5_000_000
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
