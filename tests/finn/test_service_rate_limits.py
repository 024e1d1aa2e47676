"""Service API keys: a high default limit decided in process (synced through Redis), and a per-key override."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from credits.api_keys import api_key_rate_limit_set
from credits.models import ApiKey
from finn.models import AuditEvent
from finn.ratelimit import SYNCED_MIN_LIMIT, _SyncedCounters, rate_limit_hit
from finn.redis import get_redis


def _lua_calls() -> int:
    stats = get_redis().info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def test_a_high_limit_is_decided_in_process_without_a_redis_call_per_request() -> None:
    # given: a limit of 2,000 per minute (counted in process, synced once a second), 3,000 hits
    limits = {**settings.RATE_LIMITS, "api_key": (2000, 60)}
    with override_settings(RATE_LIMITS=limits):
        before = _lua_calls()
        with ThreadPoolExecutor(8) as pool:
            decisions = list(pool.map(lambda _: rate_limit_hit(tier="api_key", identity="gateway"), range(3000)))
        calls = _lua_calls() - before
    # then: in one process the limit is exact; Redis saw only the once-a-second syncs (the bound
    # leaves room for other clients of the same Redis server, e.g. a `make run` beside the suite)
    assert sum(d.allowed for d in decisions) == 2000
    assert calls < 100, calls
    assert all(d.limit == 2000 for d in decisions)


def test_processes_see_each_others_counts_after_a_sync() -> None:
    # given: two processes' counters on one Redis
    first, second = _SyncedCounters(), _SyncedCounters()
    admitted_first = sum(first.hit("finn:ratelimit:api_key:shared", 1000, 60).allowed for _ in range(700))
    first.sync()
    # when: the second process syncs (learning of the 700), then takes what is left
    second.sync()
    second.hit("finn:ratelimit:api_key:shared", 1000, 60)
    second.sync()
    admitted_second = 1 + sum(second.hit("finn:ratelimit:api_key:shared", 1000, 60).allowed for _ in range(700))
    # then: together exactly the limit, though neither asked Redis per request
    assert admitted_first == 700
    assert admitted_first + admitted_second == 1000


def test_counts_on_their_way_to_redis_still_count() -> None:
    # given: 600 of 1,000 counted, and a sync whose push Redis holds back (CLIENT PAUSE blocks scripts)
    counters, key = _SyncedCounters(), "finn:ratelimit:api_key:in-flight"
    get_redis().delete(key)
    assert sum(counters.hit(key, 1000, 60).allowed for _ in range(600)) == 600
    get_redis().execute_command("CLIENT", "PAUSE", 400, "WRITE")
    pushing = threading.Thread(target=counters.sync)
    pushing.start()
    time.sleep(0.1)
    # when: requests arrive while the 600 are in flight
    admitted = sum(counters.hit(key, 1000, 60).allowed for _ in range(600))
    pushing.join()
    # then: the 600 in flight still count, before and after Redis answers
    assert admitted == 400
    assert not counters.hit(key, 1000, 60).allowed


def test_low_limits_stay_exact_per_request() -> None:
    assert SYNCED_MIN_LIMIT > 60
    with override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "session": (60, 60)}):
        decisions = [rate_limit_hit(tier="session", identity="wallet").allowed for _ in range(61)]
    assert decisions.count(True) == 60


@pytest.mark.django_db
def test_an_api_key_gets_the_service_default(make_account) -> None:
    response = make_account(10_000).client().get("/api/v1/accounts/me/balance")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == str(settings.RATE_LIMITS["api_key"][0]) == "100000"


@pytest.mark.django_db
def test_a_key_override_set_in_the_admin_service_applies_and_is_audited(make_account) -> None:
    # given
    funded = make_account(10_000)
    key = ApiKey.objects.get(account=funded.account)
    # when
    api_key_rate_limit_set(api_key=key, per_minute=2, actor="finance", now=timezone.now())
    client = funded.client()
    statuses = [client.get("/api/v1/accounts/me/balance").status_code for _ in range(3)]
    # then
    assert statuses == [200, 200, 429]
    assert client.get("/api/v1/accounts/me/balance").headers["X-RateLimit-Limit"] == "2"
    record = AuditEvent.objects.get(event_type="api_key_rate_limit_set")
    assert (record.actor, record.payload["rate_limit_per_minute"]) == ("finance", 2)
