"""The runtime conservation guard: a violated invariant refuses the operation (409), writes nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import transaction
from django.test import override_settings
from prometheus_client import REGISTRY

from billing import services
from billing.models import Account, BillingEntry
from billing.states import EntryState
from billing.tasks import ledger_check_task
from credits.services import agent_wallet_create
from finn import guard as guard_module
from finn.guard import InvariantViolation
from finn.models import AuditEvent

from .helpers import ledger_snapshot

ROOT = Path(__file__).resolve().parents[2]


def _violations(name: str) -> float:
    return REGISTRY.get_sample_value("conservation_guard_violations_total", {"invariant": name}) or 0.0


def _agent_with_two_holds(now) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    account = agent_wallet_create(owner_address="0x" + "ab" * 20, token_id="7", daily_cap=10_000, now=now).account
    services.account_credit_mint(
        account_id=account.pk, amount=100_000, idempotency_key=f"g:{account.pk}", correlation_id="g", now=now
    )
    first = services.entry_reserve(account_id=account.pk, estimated_cost=4_000, correlation_id="a", now=now).entry.id
    second = services.entry_reserve(account_id=account.pk, estimated_cost=4_000, correlation_id="b", now=now).entry.id
    services.entry_commit(entry_id=first, actual_cost=4_000, now=now)
    # Finance lowers the cap below what was already spent and held (the later commit would break it).
    Account.objects.filter(pk=account.pk).update(daily_cap=5_000)
    return account.pk, second


@pytest.mark.django_db
def test_a_commit_that_would_spend_past_the_cap_is_refused_and_writes_nothing(now) -> None:
    _, entry = _agent_with_two_holds(now)
    before, counted = ledger_snapshot(), _violations("budget_conservation")
    with pytest.raises(InvariantViolation) as refused:
        services.entry_commit(entry_id=entry, actual_cost=4_000, now=now)
    assert (refused.value.status, refused.value.code) == (409, "invariant_violation")
    assert refused.value.extra["invariant"] == "budget_conservation"
    assert ledger_snapshot() == before
    assert BillingEntry.objects.get(pk=entry).state == EntryState.RESERVE_HELD
    assert _violations("budget_conservation") == counted + 1


@pytest.mark.django_db
def test_the_refusal_is_a_409_over_http(make_account, now) -> None:
    from credits.api_keys import api_key_create
    from tests.conftest import post_json

    account_id, entry = _agent_with_two_holds(now)
    key = api_key_create(account=Account.objects.get(pk=account_id), now=now).secret
    from django.test import Client

    response = post_json(
        Client(headers={"Authorization": f"Bearer {key}"}),
        f"/api/v1/billing/entries/{entry}/commit",
        {"actual_cost": 4_000},
    )
    assert response.status_code == 409
    assert response.json()["code"] == "invariant_violation"


@pytest.mark.django_db
def test_break_glass_lets_it_through_but_still_counts_logs_and_audits(now, caplog: pytest.LogCaptureFixture) -> None:
    _, entry = _agent_with_two_holds(now)
    guard_module._announced.clear()
    counted = _violations("budget_conservation")
    caplog.set_level(logging.ERROR, logger="finn.guard")
    with override_settings(FINN_GUARD_BYPASS=True, FINN_GUARD_BYPASS_BY="oncall@finn"):
        services.entry_commit(entry_id=entry, actual_cost=4_000, now=now)
    assert BillingEntry.objects.get(pk=entry).state == EntryState.COMMITTED
    assert _violations("budget_conservation") == counted + 1
    assert any(r.levelno == logging.CRITICAL and "BYPASSED" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage() == "conservation invariant violated" for r in caplog.records)
    bypass = AuditEvent.objects.get(event_type="conservation_guard_bypass")
    assert (bypass.actor, bypass.payload["by"]) == ("oncall@finn", "oncall@finn")
    assert REGISTRY.get_sample_value("conservation_guard_state", {"state": "bypassed"}) == 1
    guard_module._announced.clear()
    guard_module.guard_state_set("ready")


@pytest.mark.django_db
def test_amounts_must_be_integers_within_range(make_account, now) -> None:
    account = make_account(0).account
    with pytest.raises(InvariantViolation), transaction.atomic():
        services._post(
            event_type="probe",
            correlation_id="probe",
            legs=[(account.pk, "available", 1.5), (account.pk, "held", -1.5)],  # type: ignore[list-item]
            now=now,
        )


@pytest.mark.django_db
def test_the_scheduled_ledger_check_exports_its_result_and_the_guard_state(make_account) -> None:
    account = make_account(1_000).account
    assert ledger_check_task().endswith("; OK")
    assert REGISTRY.get_sample_value("ledger_check_ok") == 1
    assert REGISTRY.get_sample_value("conservation_guard_state", {"state": "ready"}) == 1
    Account.objects.filter(pk=account.pk).update(available=999)  # a balance row off its postings
    try:
        assert ledger_check_task().endswith("; FAILED")
        assert REGISTRY.get_sample_value("ledger_check_ok") == 0
        assert REGISTRY.get_sample_value("conservation_guard_state", {"state": "degraded"}) == 1
    finally:
        Account.objects.filter(pk=account.pk).update(available=1_000)
        ledger_check_task()


def test_break_glass_without_a_name_refuses_to_start() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "finn.settings_test", "FINN_GUARD_BYPASS": "true"}
    env.pop("FINN_GUARD_BYPASS_BY", None)
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "FINN_GUARD_BYPASS_BY" in done.stderr
