"""The Redis balance cache follows the ledger after commit, and never blocks it."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings
from django.utils import timezone

from billing import services
from billing.cache import balance_cache_key, balance_cache_read, balance_cache_write
from billing.models import Account
from finn.redis import get_redis


@pytest.mark.django_db(transaction=True)
def test_commit_writes_balances_to_redis_after_commit(make_account) -> None:
    # given
    funded = make_account(10_000)
    # when
    entry = services.entry_reserve(account_id=funded.pk, estimated_cost=3_000, correlation_id="c", now=timezone.now())
    services.entry_commit(entry_id=entry.entry.id, actual_cost=1_000, now=timezone.now())
    # then
    cached = balance_cache_read(funded.pk)
    account = Account.objects.get(pk=funded.pk)
    assert cached == {"available": 9_000, "held": 0, "version": account.version}


@pytest.mark.django_db
def test_cache_is_written_only_on_commit(make_account, django_capture_on_commit_callbacks) -> None:
    # given
    funded = make_account(10_000)
    get_redis().delete(balance_cache_key(funded.pk))
    # when
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.entry_reserve(account_id=funded.pk, estimated_cost=3_000, correlation_id="c", now=timezone.now())
    # then
    assert balance_cache_read(funded.pk) is None
    assert len(callbacks) == 1
    callbacks[0]()
    assert balance_cache_read(funded.pk)["held"] == 3_000  # type: ignore[index]


def test_an_older_version_never_overwrites_a_newer_one() -> None:
    # given
    balance_cache_write(account_id=424242, available=5, held=1, version=7)
    # when
    balance_cache_write(account_id=424242, available=9, held=0, version=6)
    # then
    assert balance_cache_read(424242) == {"available": 5, "held": 1, "version": 7}


@pytest.mark.django_db(transaction=True)
def test_money_moves_when_redis_is_down(make_account) -> None:
    # given
    funded = make_account(10_000)
    # when: Redis is unreachable (closed port) while reserving
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        result = services.entry_reserve(
            account_id=funded.pk, estimated_cost=3_000, correlation_id="c", now=timezone.now()
        )
    # then: the ledger moved; only the derived cache is stale
    assert (result.balance.available, result.balance.held) == (7_000, 3_000)
    assert Account.objects.get(pk=funded.pk).held == 3_000


@pytest.mark.django_db(transaction=True)
def test_the_background_writer_fills_the_cache_off_the_response_path(make_account) -> None:
    # given: writes handed to the background thread (the default outside the suite)
    funded = make_account(10_000)
    with override_settings(BALANCE_CACHE_ASYNC=True):
        # when
        result = services.entry_reserve(
            account_id=funded.pk, estimated_cost=400, correlation_id="c", now=timezone.now()
        )
    # then: the thread writes it shortly after, with the row's version
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and balance_cache_read(funded.pk) != {
        "available": 9_600,
        "held": 400,
        "version": result.balance.version,
    }:
        time.sleep(0.02)
    assert balance_cache_read(funded.pk) == {"available": 9_600, "held": 400, "version": result.balance.version}
