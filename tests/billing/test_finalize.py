"""Finalize pipeline against a local fake upstream (a real HTTP server)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from billing import services
from billing.errors import FenceStale, FinalizeBacklog
from billing.finalize import (
    FENCE_KEY,
    entry_finalize_attempt,
    entry_lock_key,
    finalize_breaker,
    finalize_bulk_replay,
    finalize_escalate,
    finalize_sweep,
)
from billing.models import BillingEntry
from billing.states import EntryState
from finn.locks import lock_acquire
from finn.models import AuditEvent
from finn.redis import get_redis
from tests.conftest import run_threads
from tests.fakes import Upstream, fake_upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with fake_upstream() as server, override_settings(FINALIZE_URL=server.url):
        yield server


def _pending(funded, now, actual: int = 600) -> str:  # type: ignore[no-untyped-def]
    entry_id = services.entry_reserve(
        account_id=funded.pk, estimated_cost=1_000, correlation_id="fin-1", now=now
    ).entry.id
    result = services.entry_commit(entry_id=entry_id, actual_cost=actual, now=now)
    assert result.entry.state == EntryState.FINALIZE_PENDING
    return entry_id


@pytest.mark.django_db
def test_acknowledged_entry_becomes_finalize_acked(make_account, now, upstream: Upstream) -> None:
    # given
    funded = make_account(10_000)
    entry_id = _pending(funded, now)
    # when
    outcome = entry_finalize_attempt(entry_id=entry_id)
    # then
    assert outcome == "acked"
    entry = BillingEntry.objects.get(pk=entry_id)
    assert entry.state == EntryState.FINALIZE_ACKED
    assert entry.fence_token > 0
    assert upstream.requests == [
        {
            "billing_entry_id": entry_id,
            "account_id": str(funded.pk),
            "actual_cost_micro_usd": "600",
            "correlation_id": "fin-1",
        }
    ]
    assert upstream.headers[0]["Idempotency-Key"] == entry_id
    ack = AuditEvent.objects.get(billing_entry_id=entry_id, event_type="billing_finalize_ack")
    assert ack.payload["upstream_response_status"] == 200
    assert get_redis().get(entry_lock_key(entry_id)) is None  # lock released


@pytest.mark.django_db
@override_settings(FINALIZE_BREAKER_THRESHOLD=100)
def test_five_failures_make_poison_with_backoff_1_2_4_8(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    with fake_upstream(statuses=[500]) as server, override_settings(FINALIZE_URL=server.url):
        entry_id = _pending(funded, now)
        delays = []
        # when
        outcomes = []
        for _ in range(5):
            before = timezone.now()
            outcomes.append(entry_finalize_attempt(entry_id=entry_id))
            entry = BillingEntry.objects.get(pk=entry_id)
            if entry.next_attempt_at:
                delays.append(round((entry.next_attempt_at - before).total_seconds()))
    # then
    assert outcomes == ["retry_scheduled"] * 4 + ["failed"]
    assert delays == [1, 2, 4, 8]
    entry = BillingEntry.objects.get(pk=entry_id)
    assert (entry.state, entry.finalize_attempts, entry.finalize_last_error) == (
        EntryState.FINALIZE_FAILED,
        5,
        "http 500",
    )
    fail = AuditEvent.objects.get(billing_entry_id=entry_id, event_type="billing_finalize_fail")
    assert (fail.payload["attempt"], fail.payload["reason"]) == (5, "http 500")


@pytest.mark.django_db
@override_settings(FINALIZE_TIMEOUT_SECONDS=1)
def test_timeout_is_a_failed_attempt(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    with fake_upstream(delay_seconds=2) as server, override_settings(FINALIZE_URL=server.url):
        entry_id = _pending(funded, now)
        # when
        outcome = entry_finalize_attempt(entry_id=entry_id)
    # then
    entry = BillingEntry.objects.get(pk=entry_id)
    assert outcome == "retry_scheduled"
    assert (entry.state, entry.finalize_attempts, entry.finalize_last_error) == (
        EntryState.FINALIZE_PENDING,
        1,
        "timeout",
    )


@pytest.mark.django_db
def test_garbage_answer_is_a_failed_attempt(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    with fake_upstream(garbage=True) as server, override_settings(FINALIZE_URL=server.url):
        entry_id = _pending(funded, now)
        # when
        outcome = entry_finalize_attempt(entry_id=entry_id)
    # then
    entry = BillingEntry.objects.get(pk=entry_id)
    assert outcome == "retry_scheduled"
    assert entry.finalize_attempts == 1
    assert entry.finalize_last_error


@pytest.mark.django_db
def test_redis_down_defers_without_failing_the_entry(make_account, now, upstream: Upstream) -> None:
    # given
    funded = make_account(10_000)
    entry_id = _pending(funded, now)
    # when
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        outcome = entry_finalize_attempt(entry_id=entry_id)
    # then
    entry = BillingEntry.objects.get(pk=entry_id)
    assert outcome == "deferred"
    assert (entry.state, entry.finalize_attempts, entry.finalize_last_error) == (
        EntryState.FINALIZE_PENDING,
        0,
        "redis_unavailable",
    )
    assert entry.next_attempt_at is not None
    assert entry.next_attempt_at > timezone.now()
    assert upstream.requests == []


@pytest.mark.django_db
def test_open_breaker_defers_and_does_not_count(make_account, now, upstream: Upstream) -> None:
    # given
    funded = make_account(10_000)
    entry_id = _pending(funded, now)
    breaker = finalize_breaker()
    for _ in range(5):
        breaker.record_failure()
    # when
    outcome = entry_finalize_attempt(entry_id=entry_id)
    # then
    entry = BillingEntry.objects.get(pk=entry_id)
    assert outcome == "deferred"
    assert (entry.finalize_attempts, entry.finalize_last_error) == (0, "circuit_open")
    assert upstream.requests == []
    assert REGISTRY.get_sample_value("circuit_breaker_state", {"breaker": "finalize"}) == 1


@pytest.mark.django_db
@override_settings(FINALIZE_BREAKER_COOLDOWN_SECONDS=0)
def test_half_open_probe_success_closes_the_breaker(make_account, now, upstream: Upstream) -> None:
    # given
    funded = make_account(10_000)
    entry_id = _pending(funded, now)
    breaker = finalize_breaker()
    for _ in range(5):
        breaker.record_failure()
    # when
    outcome = entry_finalize_attempt(entry_id=entry_id)
    # then
    assert outcome == "acked"
    assert breaker.state() == "CLOSED"


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_finalize_one_entry_at_once(make_account) -> None:
    # given
    funded = make_account(10_000)
    with fake_upstream(delay_seconds=0.5) as server, override_settings(FINALIZE_URL=server.url):
        entry_id = _pending(funded, timezone.now())
        # when
        outcomes = run_threads(8, lambda _: entry_finalize_attempt(entry_id=entry_id))
    # then
    assert sorted(outcomes).count("acked") == 1
    assert set(outcomes) <= {"acked", "lock_contention", "not_pending"}
    assert len(server.requests) == 1
    assert AuditEvent.objects.filter(billing_entry_id=entry_id, event_type="billing_finalize_ack").count() == 1


@pytest.mark.django_db
def test_stale_lock_holder_cannot_write(make_account, now, upstream: Upstream) -> None:
    # given: a slow holder whose lock expired, and a new holder
    funded = make_account(10_000)
    entry_id = _pending(funded, now)
    slow = lock_acquire(key=entry_lock_key(entry_id), fence_key=FENCE_KEY, ttl_seconds=1)
    time.sleep(1.1)
    fresh = lock_acquire(key=entry_lock_key(entry_id), fence_key=FENCE_KEY, ttl_seconds=30)
    assert fresh.acquired
    assert fresh.token > slow.token  # type: ignore[operator]
    later = timezone.now() + timedelta(seconds=5)
    services.entry_finalize_reschedule(
        entry_id=entry_id, next_attempt_at=later, now=now, attempts=1, error="x", fence_token=fresh.token, enqueue=False
    )
    before = BillingEntry.objects.values().get(pk=entry_id)
    stale_before = REGISTRY.get_sample_value("billing_fencing_stale_total") or 0
    # when
    with pytest.raises(FenceStale):
        services.entry_finalize_ack(entry_id=entry_id, response_status=200, now=now, fence_token=slow.token)
    # then
    assert BillingEntry.objects.values().get(pk=entry_id) == before
    assert REGISTRY.get_sample_value("billing_fencing_stale_total") == stale_before + 1


@pytest.mark.django_db(transaction=True)
@override_settings(FINALIZE_LOCK_TTL_SECONDS=1)
def test_slow_attempt_overtaken_after_lock_expiry_writes_nothing(make_account) -> None:
    # given: the first upstream call takes 2 s, longer than the 1 s lock
    funded = make_account(10_000)
    with fake_upstream(first_delay_seconds=2.0) as server, override_settings(FINALIZE_URL=server.url):
        entry_id = _pending(funded, timezone.now())

        def attempt(index: int) -> str:
            if index == 1:
                time.sleep(1.3)  # after the slow holder's lock expired
            return entry_finalize_attempt(entry_id=entry_id)

        # when
        outcomes = run_threads(2, attempt)
    # then: the fast (second) holder acked; the slow one changed nothing
    assert outcomes[1] == "acked"
    assert outcomes[0] in {"stale", "not_pending"}
    assert AuditEvent.objects.filter(billing_entry_id=entry_id, event_type="billing_finalize_ack").count() == 1
    assert len(server.requests) == 2


@pytest.mark.django_db
def test_sweeper_re_enqueues_overdue_entries_and_leases_them(make_account, now, upstream: Upstream) -> None:
    # given: the wake-up message was lost; the entry is overdue
    funded = make_account(10_000)
    entry_id = _pending(funded, now - timedelta(minutes=5))
    # when
    first = finalize_sweep(now=now)
    second = finalize_sweep(now=now)
    # then
    assert (first.enqueued, first.pending) == (1, 1)
    assert second.enqueued == 0  # leased, not enqueued twice
    assert BillingEntry.objects.get(pk=entry_id).next_attempt_at > now  # type: ignore[operator]
    assert get_redis().llen("celery") == 1  # the wake-up is on the real broker


@pytest.mark.django_db
def test_capped_risk_blocks_reserve_until_the_backlog_drains(make_account, now, upstream: Upstream) -> None:
    # given: 500 CU = 5 USD = 5_000_000 µUSD of exposure allowed
    funded = make_account(20_000_000)
    first = _pending_big(funded, now, 3_000_000)
    _pending_big(funded, now, 2_000_001)
    # when / then
    with pytest.raises(FinalizeBacklog) as info:
        services.entry_reserve(account_id=funded.pk, estimated_cost=1, correlation_id="c", now=now)
    assert (info.value.status, info.value.code) == (402, "finalize_backlog")
    assert entry_finalize_attempt(entry_id=first) == "acked"
    assert services.entry_reserve(account_id=funded.pk, estimated_cost=1, correlation_id="c", now=now).entry.id


def _pending_big(funded, now, amount: int) -> str:  # type: ignore[no-untyped-def]
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=amount, correlation_id="c", now=now).entry.id
    services.entry_commit(entry_id=entry_id, actual_cost=amount, now=now)
    return entry_id


@pytest.mark.django_db
@override_settings(FINALIZE_BREAKER_THRESHOLD=100)
def test_poison_older_than_a_day_escalates_once(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    with fake_upstream(statuses=[500]) as server, override_settings(FINALIZE_URL=server.url):
        entry_id = _pending(funded, now)
        for _ in range(5):
            entry_finalize_attempt(entry_id=entry_id)
    assert BillingEntry.objects.get(pk=entry_id).state == EntryState.FINALIZE_FAILED
    # when
    too_early = finalize_escalate(now=timezone.now() + timedelta(hours=23))
    first = finalize_escalate(now=timezone.now() + timedelta(hours=25))
    again = finalize_escalate(now=timezone.now() + timedelta(hours=26))
    # then
    assert (too_early, first, again) == (0, 1, 0)
    assert BillingEntry.objects.get(pk=entry_id).escalated_at is not None


@pytest.mark.django_db(transaction=True)
@override_settings(FINALIZE_BREAKER_THRESHOLD=1000)
def test_bulk_replay_acks_poison_with_bounded_concurrency(make_account) -> None:
    # given: 12 poison entries
    funded = make_account(1_000_000)
    now = timezone.now()
    with fake_upstream(statuses=[500]) as failing, override_settings(FINALIZE_URL=failing.url):
        ids = [_pending(funded, now, actual=10) for _ in range(12)]
        for entry_id in ids:
            for _ in range(5):
                entry_finalize_attempt(entry_id=entry_id)
    assert BillingEntry.objects.filter(state=EntryState.FINALIZE_FAILED).count() == 12
    # when
    with fake_upstream(delay_seconds=0.3) as server, override_settings(FINALIZE_URL=server.url):
        outcomes = finalize_bulk_replay(concurrency=5)
    # then
    assert outcomes == {"acked": 12}
    assert server.max_in_flight <= 5
    assert server.max_in_flight >= 2
    assert BillingEntry.objects.filter(state=EntryState.FINALIZE_ACKED).count() == 12
