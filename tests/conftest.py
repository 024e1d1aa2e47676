"""Fixtures shared by the whole suite: real PostgreSQL and Redis, no mocks.

After every test that touched the database an autouse check proves the
ledger still balances: pending deferred constraint triggers are fired
(``SET CONSTRAINTS ALL IMMEDIATE``) and every journal sums to zero per
denomination, every balance row equals the sum of its postings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from billing.models import Account
from billing.selectors import ledger_check
from billing.services import account_create, account_credit_mint, system_account_cache_clear
from credits import api_keys
from credits.api_keys import api_key_create
from finn.degradation import monitor
from finn.ratelimit import local_buckets, synced_counters
from finn.redis import get_redis


@pytest.fixture(autouse=True)
def _fresh_redis_and_caches() -> Iterator[None]:
    system_account_cache_clear()
    monitor.reset()
    local_buckets.clear()
    synced_counters.clear()
    api_keys._local.clear()
    get_redis().flushdb()
    yield
    system_account_cache_clear()


@pytest.fixture(autouse=True)
def _ledger_balances_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        yield
        return
    # Set the database up before this fixture so its teardown runs first.
    request.getfixturevalue("_django_db_helper")
    yield
    if connection.in_atomic_block:
        # Inside the test's transaction deferred triggers would never fire:
        # fire them now so a zero-sum violation fails this test too.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    report = ledger_check()
    assert report.ok, "\n".join(report.lines())


@dataclass
class Funded:
    account: Account
    key: str

    @property
    def pk(self) -> int:
        return self.account.pk

    def client(self) -> Client:
        return Client(headers={"Authorization": f"Bearer {self.key}"})


@pytest.fixture
def now() -> datetime:
    return timezone.now()


_counter = iter(range(1, 10**9))
_counter_lock = threading.Lock()


def _next() -> int:
    with _counter_lock:
        return next(_counter)


@pytest.fixture
def make_account() -> Callable[..., Funded]:
    """An account with ``credit`` µUSD minted through the ledger, and an API key."""

    def make(
        credit: int = 0,
        *,
        kind: str = "user",
        credit_limit: int = 0,
        allow_overcapture: bool = False,
        staff: bool = False,
    ) -> Funded:
        owner = None
        if staff:
            owner = get_user_model().objects.create(username=f"staff{_next()}", is_staff=True)
        account = account_create(kind=kind, owner=owner, credit_limit=credit_limit, allow_overcapture=allow_overcapture)
        if credit:
            account_credit_mint(
                account_id=account.pk,
                amount=credit,
                idempotency_key=f"test-mint:{account.pk}",
                correlation_id="test",
                now=timezone.now(),
            )
        issued = api_key_create(account=account, now=timezone.now())
        account.refresh_from_db()
        return Funded(account=account, key=issued.secret)

    return make


def post_json(client: Client, path: str, body: Any, **headers: str) -> Any:
    return client.post(path, data=body, content_type="application/json", headers=headers or None)


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released together; collect results.

    Each thread has its own database connection, closed when it ends.
    """
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = target(index)
        except BaseException as exc:  # recorded for the test to inspect
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.fixture(autouse=True)
def _finance_group(request: pytest.FixtureRequest) -> None:
    """The "Finance" group of the webhooks migration and the seeded model prices (what migrate
    leaves behind), back after a transactional test's flush."""
    if "django_db_setup" not in request.fixturenames and not request.node.get_closest_marker("django_db"):
        return
    request.getfixturevalue("_django_db_helper")
    import importlib

    from django.apps import apps

    from credits.pricing import pricing_seed

    migration = importlib.import_module("webhooks.migrations.0003_finance_group")
    migration.create_finance_group(apps, None)
    pricing_seed()
