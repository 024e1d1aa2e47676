"""Staff endpoints of the finalize pipeline."""

from __future__ import annotations

import pytest
from django.test import override_settings

from billing.states import EntryState
from finn.redis import get_redis
from tests.conftest import post_json

from .helpers import entry_in_state, ledger_snapshot


@pytest.mark.django_db
def test_staff_finalize_a_poison_entry_by_hand(make_account, now) -> None:
    # given
    customer, staff = make_account(10_000), make_account(0, staff=True)
    entry_id = entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=now)
    # when
    refused = post_json(customer.client(), f"/api/v1/billing/entries/{entry_id}/finalize", {"reason": "x"})
    done = post_json(staff.client(), f"/api/v1/billing/entries/{entry_id}/finalize", {"reason": "settled by phone"})
    # then
    assert refused.status_code == 403
    assert done.status_code == 200
    assert done.json()["entry"]["state"] == "FINALIZE_ACKED"


@pytest.mark.django_db
def test_manual_finalize_only_takes_poison(make_account, now) -> None:
    # given
    customer, staff = make_account(10_000), make_account(0, staff=True)
    entry_id = entry_in_state(EntryState.FINALIZE_PENDING, account_id=customer.pk, now=now)
    before = ledger_snapshot()
    # when
    response = post_json(staff.client(), f"/api/v1/billing/entries/{entry_id}/finalize", {"reason": "r"})
    # then
    assert response.status_code == 409
    assert response.json()["current_state"] == "FINALIZE_PENDING"
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_bulk_replay_is_queued_for_staff(make_account, now) -> None:
    # given
    customer, staff = make_account(10_000), make_account(0, staff=True)
    for _ in range(3):
        entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=now, estimate=100, actual=10)
    # when
    refused = post_json(customer.client(), "/api/v1/billing/finalize/replay", {})
    queued = post_json(staff.client(), "/api/v1/billing/finalize/replay", {"concurrency": 3})
    bad = post_json(staff.client(), "/api/v1/billing/finalize/replay", {"concurrency": 0})
    # then
    assert refused.status_code == 403
    assert (queued.status_code, queued.json()) == (202, {"queued": 3, "concurrency": 3})
    assert get_redis().llen("celery") == 1
    assert bad.status_code == 400


@pytest.mark.django_db
@override_settings(FINALIZE_PENDING_UNHEALTHY=2)
def test_finalize_health_reports_backlog(make_account, now) -> None:
    # given
    customer, staff = make_account(10_000), make_account(0, staff=True)
    healthy = staff.client().get("/api/v1/billing/finalize/health")
    for _ in range(2):
        entry_in_state(EntryState.FINALIZE_PENDING, account_id=customer.pk, now=now, estimate=100, actual=10)
    # when
    unhealthy = staff.client().get("/api/v1/billing/finalize/health")
    # then
    assert (healthy.status_code, healthy.json()["healthy"]) == (200, True)
    assert unhealthy.status_code == 503
    assert unhealthy.json() == {"breaker_state": "CLOSED", "pending": 2, "failed": 0, "healthy": False}


@pytest.mark.django_db
def test_reserve_over_the_backlog_is_402_finalize_backlog(make_account, now) -> None:
    # given
    funded = make_account(20_000_000)
    for _ in range(2):
        entry_in_state(EntryState.FINALIZE_PENDING, account_id=funded.pk, now=now, estimate=3_000_000, actual=3_000_000)
    # when
    response = post_json(funded.client(), "/api/v1/billing/entries", {"estimated_cost": 1})
    # then
    assert response.status_code == 402
    assert response.json()["code"] == "finalize_backlog"
