"""Reconciliation repairs a flushed or corrupted Redis cache, audit first."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.utils import timezone

from billing import services
from billing.cache import balance_cache_key, balance_cache_read
from billing.models import Account
from billing.reconciliation import reconciliation_run
from finn.models import AuditEvent
from finn.redis import get_redis


def _corrections() -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            event_type="billing_reconciliation", payload__correction_type="RECONCILIATION_CORRECTION"
        )
    )


@pytest.mark.django_db(transaction=True)
def test_flushed_and_corrupted_keys_are_repaired_with_corrections(make_account) -> None:
    # given
    alice, bob, carol = make_account(5_000), make_account(7_000), make_account(9_000)
    services.entry_reserve(account_id=alice.pk, estimated_cost=1_000, correlation_id="c", now=timezone.now())
    client = get_redis()
    client.flushdb()  # lost cache
    client.hset(balance_cache_key(bob.pk), mapping={"available": "1", "held": "0", "version": "999"})
    client.set(balance_cache_key(carol.pk), "garbage")  # wrong type
    # when
    result = reconciliation_run(now=timezone.now())
    # then
    assert result is not None
    assert (result.accounts_checked, result.divergences_found, result.divergences_corrected) == (3, 3, 3)
    for funded in (alice, bob, carol):
        account = Account.objects.get(pk=funded.pk)
        cached = balance_cache_read(funded.pk)
        assert cached is not None
        assert (cached["available"], cached["held"]) == (account.available, account.held)
    corrections = {int(e.payload["account"]): e for e in _corrections()}
    assert set(corrections) == {alice.pk, bob.pk, carol.pk}
    assert corrections[bob.pk].payload["cached_balance"] == {"available": "1", "held": "0"}
    assert corrections[bob.pk].payload["delta"] == {"available": "6999", "held": "0"}
    assert result.total_drift == 6_999
    assert result.drift_threshold_exceeded is True
    summary = AuditEvent.objects.filter(event_type="billing_reconciliation").order_by("-sequence").first()
    assert summary is not None
    assert summary.payload["divergences_found"] == 3
    assert summary.payload["reconciliation_run_id"] == result.run_id
    # corrections were written before the summary
    assert max(e.sequence for e in corrections.values()) < summary.sequence


@pytest.mark.django_db(transaction=True)
def test_matching_cache_gives_no_corrections_and_one_summary(make_account) -> None:
    # given
    make_account(5_000)
    # when
    result = reconciliation_run(now=timezone.now())
    # then
    assert result is not None
    assert (result.divergences_found, result.total_drift, result.drift_threshold_exceeded) == (0, 0, False)
    assert _corrections() == []
    assert AuditEvent.objects.filter(event_type="billing_reconciliation").count() == 1


@pytest.mark.django_db(transaction=True)
@override_settings(RECONCILIATION_DRIFT_ALERT_MICRO_USD=1_000)
def test_small_drift_does_not_alert(make_account) -> None:
    # given
    funded = make_account(5_000)
    get_redis().hset(balance_cache_key(funded.pk), mapping={"available": "4000", "held": "0", "version": "1"})
    # when
    result = reconciliation_run(now=timezone.now())
    # then
    assert result is not None
    assert (result.total_drift, result.drift_threshold_exceeded) == (1_000, False)
