"""Redis health monitor, the degradation table, and rate limits, on real Redis
(and on a closed port standing in for Redis being down)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from finn.degradation import (
    DEGRADATION,
    AuthenticationUnavailable,
    LockDependencyUnavailable,
    Mode,
    RedisHealthMonitor,
    ServiceUnavailable,
    monitor,
    redis_guard,
)
from finn.ratelimit import rate_limit_hit
from finn.redis import get_redis
from tests.conftest import post_json

DOWN = override_settings(REDIS_URL="redis://127.0.0.1:1/0")


def test_degradation_table_is_the_specified_one() -> None:
    assert {name: (rule.mode, rule.status) for name, rule in DEGRADATION.items()} == {
        "x402_nonce": (Mode.FAIL_CLOSED, 503),
        "siwe_nonce": (Mode.FAIL_CLOSED, 401),
        "rate_limit": (Mode.IN_MEMORY_FALLBACK, None),
        "api_key_cache": (Mode.DB_FALLBACK, None),
        "agent_daily_cache": (Mode.DB_FALLBACK, None),
        "webhooks": (Mode.FAIL_CLOSED, 503),
        "purchase_lock": (Mode.FAIL_CLOSED, 503),
        "feature_flags": (Mode.DB_FALLBACK, None),
        "nft_detection_cache": (Mode.DB_FALLBACK, None),
    }


@pytest.mark.parametrize(
    ("subsystem", "expected"),
    [
        ("x402_nonce", ServiceUnavailable),
        ("siwe_nonce", AuthenticationUnavailable),
        ("webhooks", LockDependencyUnavailable),
        ("purchase_lock", LockDependencyUnavailable),
        ("rate_limit", "fallback"),
        ("api_key_cache", "fallback"),
        ("agent_daily_cache", "fallback"),
    ],
)
def test_every_row_applies_when_redis_is_down(subsystem: str, expected: object) -> None:
    # when: Redis is a closed port
    with DOWN:
        operation = lambda: get_redis().ping()  # noqa: E731
        if expected == "fallback":
            result = redis_guard(subsystem, operation, fallback=lambda: "fallback")
            # then
            assert result == "fallback"
        else:
            with pytest.raises(expected) as info:  # type: ignore[call-overload]
                redis_guard(subsystem, operation, fallback=lambda: "never")
            assert info.value.status == DEGRADATION[subsystem].status


def test_monitor_opens_after_three_failures_and_stops_trying() -> None:
    # given
    calls = []

    def failing() -> str:
        calls.append(1)
        raise redis.ConnectionError("down")

    # when
    for _ in range(5):
        redis_guard("rate_limit", failing, fallback=lambda: "local")
    # then: only three real attempts; then the table answers without trying
    assert len(calls) == 3
    assert monitor.state == "OPEN"


def test_monitor_half_open_admits_one_probe_and_recovers() -> None:
    # given
    health = RedisHealthMonitor(threshold=1, cooldown_seconds=0.1)
    health.record_failure()
    time.sleep(0.15)
    # when
    with ThreadPoolExecutor(8) as pool:
        admitted = list(pool.map(lambda _: health.available(), range(8)))
    # then
    assert admitted.count(True) == 1
    health.record_success()
    assert health.state == "CLOSED"


def test_sliding_window_is_atomic_under_concurrency() -> None:
    # when: 100 concurrent hits against a limit of 60 (the per-session tier)
    with ThreadPoolExecutor(20) as pool:
        decisions = list(pool.map(lambda _: rate_limit_hit(tier="session", identity="race"), range(100)))
    # then
    assert sum(d.allowed for d in decisions) == 60
    assert min(d.remaining for d in decisions) == 0


@override_settings(RATE_LIMITS={"free": (3, 1), "x402": (30, 60), "challenge": (120, 60), "api_key": (60, 60)})
def test_window_slides() -> None:
    # given
    first = [rate_limit_hit(tier="free", identity="ip").allowed for _ in range(4)]
    # when
    time.sleep(1.1)
    # then
    assert first == [True, True, True, False]
    assert rate_limit_hit(tier="free", identity="ip").allowed is True


@override_settings(RATE_LIMITS={"free": (3, 60), "x402": (30, 60), "challenge": (120, 60), "api_key": (60, 60)})
def test_token_bucket_takes_over_when_redis_is_down() -> None:
    # when
    with DOWN:
        decisions = [rate_limit_hit(tier="free", identity="ip").allowed for _ in range(5)]
    # then
    assert decisions == [True, True, True, False, False]


@pytest.mark.django_db
@override_settings(RATE_LIMITS={"free": (60, 60), "x402": (30, 60), "challenge": (120, 60), "api_key": (3, 60)})
def test_api_answers_429_with_headers(make_account) -> None:
    # given
    client = make_account(10_000).client()
    # when
    responses = [client.get("/api/v1/accounts/me/balance") for _ in range(4)]
    # then
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert responses[3].json()["code"] == "rate_limited"
    assert 1 <= int(responses[3].headers["Retry-After"]) <= 60
    assert int(responses[0].headers["X-RateLimit-Reset"]) > time.time()
    assert responses[0].headers["X-RateLimit-Limit"] == "3"


@pytest.mark.django_db
def test_api_keeps_serving_with_redis_down(make_account) -> None:
    # given
    client = make_account(10_000).client()
    # when
    with DOWN:
        response = post_json(client, "/api/v1/billing/entries", {"estimated_cost": 10})
    # then: rate limits fell back to memory, money moved in Postgres
    assert response.status_code == 201
    assert response.headers["X-RateLimit-Limit"] == str(settings.RATE_LIMITS["api_key"][0])
