"""Redis locks with fencing tokens (real Redis), and the job leases of one-at-a-time jobs (real PostgreSQL)."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.utils import timezone

from billing.finalize import finalize_escalate, finalize_sweep
from billing.reconciliation import reconciliation_run
from billing.services.holds import holds_expire
from billing.tasks import ledger_check_task
from finn.audit_chain import audit_chain
from finn.locks import FENCE_MAX, Job, fence_raise, job_lease, lock_acquire, lock_release
from finn.models import JobLease
from finn.redis import get_redis


def test_second_acquirer_gets_contention_not_an_exception() -> None:
    # given
    first = lock_acquire(key="t:lock:a", fence_key="t:fence")
    # when
    second = lock_acquire(key="t:lock:a", fence_key="t:fence")
    # then
    assert first.acquired is True
    assert (second.acquired, second.reason, second.holder) == (False, "lock_contention", first.owner)


def test_tokens_increase_with_each_acquisition() -> None:
    # when
    tokens = []
    for _ in range(3):
        result = lock_acquire(key="t:lock:b", fence_key="t:fence")
        tokens.append(result.token)
        lock_release(key="t:lock:b", owner=result.owner)
    # then
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 3


def test_release_by_a_non_owner_does_nothing() -> None:
    # given
    held = lock_acquire(key="t:lock:c", fence_key="t:fence")
    # when
    released = lock_release(key="t:lock:c", owner="someone-else")
    # then
    assert released is False
    assert get_redis().get("t:lock:c") == held.owner
    assert lock_release(key="t:lock:c", owner=held.owner) is True
    assert get_redis().get("t:lock:c") is None


def test_lock_expires_and_the_next_holder_gets_a_higher_token() -> None:
    # given
    slow = lock_acquire(key="t:lock:d", fence_key="t:fence", ttl_seconds=1)
    time.sleep(1.2)
    # when
    fast = lock_acquire(key="t:lock:d", fence_key="t:fence")
    # then
    assert fast.acquired
    assert fast.token > slow.token  # type: ignore[operator]
    assert lock_release(key="t:lock:d", owner=slow.owner) is False  # the slow holder lost it


def test_token_overflow_refuses_the_lock() -> None:
    # given
    get_redis().set("t:fence:max", FENCE_MAX)
    # when
    result = lock_acquire(key="t:lock:e", fence_key="t:fence:max")
    # then
    assert (result.acquired, result.reason) == (False, "fence_overflow")
    assert get_redis().get("t:lock:e") is None


def test_fence_can_be_raised_after_a_counter_reset() -> None:
    # given
    get_redis().delete("t:fence:r")
    # when
    fence_raise(fence_key="t:fence:r", minimum=500)
    result = lock_acquire(key="t:lock:f", fence_key="t:fence:r")
    # then
    assert result.token == 501


@pytest.mark.django_db(transaction=True)
def test_a_job_lease_admits_one_holder_and_is_free_again_after_it() -> None:
    # when
    with (
        job_lease(Job.RECONCILIATION) as first,
        job_lease(Job.RECONCILIATION) as second,
        job_lease(Job.LEDGER_CHECK) as other_job,
    ):
        pass
    with job_lease(Job.RECONCILIATION) as after:
        pass
    # then
    assert first is not None
    assert second is None
    assert other_job is not None
    assert after is not None


@pytest.mark.django_db(transaction=True)
def test_a_dead_holders_lease_expires_and_it_cannot_renew_it_back() -> None:
    # given: a holder that "died": its lease is left in place and runs out
    with job_lease(Job.HOLD_EXPIRY_SWEEP, seconds=1) as dead:
        assert dead is not None
        with connection.cursor() as cursor:
            cursor.execute("UPDATE finn_joblease SET expires_at = clock_timestamp() - interval '1 s'")
        # when
        with job_lease(Job.HOLD_EXPIRY_SWEEP) as successor:
            # then: the job runs again, and the old holder learns it lost the job
            assert successor is not None
            assert dead.renew() is False
            assert successor.renew() is True
    assert JobLease.objects.get(name=Job.HOLD_EXPIRY_SWEEP).holder == successor.holder


@pytest.mark.django_db(transaction=True)
def test_no_job_leaves_a_session_lock_behind() -> None:
    # when: every one-at-a-time job runs
    now = timezone.now()
    holds_expire(now=now)
    finalize_sweep(now=now)
    finalize_escalate(now=now)
    reconciliation_run(now=now)
    audit_chain(lag_seconds=0)
    ledger_check_task()
    # then: nothing is held by this session (a pooler would hand it to the next client)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        assert cursor.fetchone()[0] == 0
    assert not JobLease.objects.filter(expires_at__gt=timezone.now()).exists()
