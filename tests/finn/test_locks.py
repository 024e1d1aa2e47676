"""Redis locks with fencing tokens, on the real Redis."""

from __future__ import annotations

import time

import pytest

from finn.locks import FENCE_MAX, AdvisoryLock, advisory_lock, fence_raise, lock_acquire, lock_release
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
def test_advisory_lock_admits_one_holder() -> None:
    # given
    from django.db import connections

    other = connections.create_connection("default")
    try:
        # when
        with advisory_lock(AdvisoryLock.RECONCILIATION) as first, other.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [int(AdvisoryLock.RECONCILIATION)])
            second = cursor.fetchone()[0]
        # then
        assert first is True
        assert second is False
    finally:
        other.close()
