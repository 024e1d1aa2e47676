"""The admin's "replay selected" on finalize dead letters finalizes them, through a real worker."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from billing.models import BillingEntry
from billing.states import EntryState
from finn.models import AuditEvent
from finn.redis import get_redis
from tests.billing.helpers import entry_in_state
from tests.fakes import fake_upstream
from tests.faults.celery_worker import start_worker
from tests.second_factor import verified_client


@pytest.fixture
def worker_slot() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.django_db(transaction=True)
def test_replay_selected_takes_a_poison_entry_to_finalize_acked(make_account, worker_slot, tmp_path: Path) -> None:
    # given: a poison entry, and no message left over from walking it there
    customer = make_account(10_000)
    poison = entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=timezone.now())
    get_redis().delete("celery")
    staff = User.objects.create_user("fin", password="pw-fin", is_staff=True)
    staff.groups.add(Group.objects.get(name="Finance"))
    client = verified_client(staff)
    log = tmp_path / "worker.log"
    with fake_upstream() as upstream:
        worker_slot.append(start_worker(log, FINALIZE_URL=upstream.url))
        # when: finance staff replay it from the dead-letter list
        selected = {"action": "replay_selected", "_selected_action": [poison]}
        confirm = client.post("/admin/billing/finalizedeadletter/", selected)
        assert confirm.status_code == 200
        assert "Reason (required" in confirm.content.decode()
        assert BillingEntry.objects.get(pk=poison).state == EntryState.FINALIZE_FAILED  # nothing queued yet
        response = client.post(
            "/admin/billing/finalizedeadletter/", {**selected, "confirmed": "yes", "reason": "upstream fixed, INC-7"}
        )
        assert response.status_code == 302
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and BillingEntry.objects.get(pk=poison).state != EntryState.FINALIZE_ACKED:
            time.sleep(0.2)
        # then: the worker replayed it upstream once, and the ack is audited
        assert BillingEntry.objects.get(pk=poison).state == EntryState.FINALIZE_ACKED, log.read_text()
        assert len(upstream.requests) == 1
    assert AuditEvent.objects.filter(billing_entry_id=poison, event_type="billing_finalize_ack").count() == 1
    asked = AuditEvent.objects.get(billing_entry_id=poison, event_type="billing_finalize_replay_requested")
    assert (asked.actor, asked.reason) == ("fin", "upstream fixed, INC-7")
    assert asked.payload["by"] == {"actor": "fin", "ip": "127.0.0.1", "second_factor": "totp"}
