"""What each subsystem does when Redis is down: one table, one guard.

The Redis health monitor is an in-process breaker (its state cannot live in
Redis, since Redis is what it watches): 3 consecutive failures → OPEN for
30 s, then one probe. While it is open, Redis is not even tried; every Redis
use on a request path goes through ``redis_guard``, which applies the row of
``DEGRADATION`` for its subsystem.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis
from django.conf import settings
from prometheus_client import Counter

from finn.breaker import breaker_changed, breaker_state
from finn.errors import DomainError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Mode(enum.StrEnum):
    FAIL_CLOSED = "fail_closed"
    IN_MEMORY_FALLBACK = "in_memory_fallback"
    DB_FALLBACK = "db_fallback"


@dataclass(frozen=True)
class Degradation:
    mode: Mode
    status: int | None = None  # for FAIL_CLOSED


DEGRADATION: dict[str, Degradation] = {
    # Replay protection of payments cannot be checked: refuse the payment.
    "x402_nonce": Degradation(Mode.FAIL_CLOSED, 503),
    # Sign-in nonces cannot be checked: refuse the sign-in.
    "siwe_nonce": Degradation(Mode.FAIL_CLOSED, 401),
    # Throttling degrades to a per-process token bucket.
    "rate_limit": Degradation(Mode.IN_MEMORY_FALLBACK),
    # API keys are looked up in PostgreSQL instead of the cache.
    "api_key_cache": Degradation(Mode.DB_FALLBACK),
    # Agent daily spend is read from PostgreSQL (its truth) instead of the cache.
    "agent_daily_cache": Degradation(Mode.DB_FALLBACK),
    # Webhooks need their distributed lock: the provider retries later.
    "webhooks": Degradation(Mode.FAIL_CLOSED, 503),
    # Feature flags and the beta allowlist are read from PostgreSQL (their truth).
    "feature_flags": Degradation(Mode.DB_FALLBACK),
    # NFT detection results are not cached (every call asks the API or the chain).
    "nft_detection_cache": Degradation(Mode.DB_FALLBACK),
    # Boost and badge purchases take a per-member distributed lock: refuse them.
    "purchase_lock": Degradation(Mode.FAIL_CLOSED, 503),
}

degraded_total = Counter(
    "finn_redis_degraded_total", "Redis uses answered by the degradation table, by subsystem.", ["subsystem"]
)


class ServiceUnavailable(DomainError):
    code = "service_unavailable"
    status = 503

    def __init__(self, message: str = "a required service is unavailable; retry later", **extra: object) -> None:
        super().__init__(message, **extra)
        self.headers["Retry-After"] = "30"


fail_closed_total = Counter(
    "finn_fail_closed_503_total", "503s served because a lock dependency (Redis) is down.", ["subsystem"]
)


lock_fallbacks_total = Counter(
    "finn_lock_fallbacks_total",
    "Work that fell back from the Redis lock (to a PostgreSQL advisory lock, say) because Redis was unavailable.",
    ["subsystem", "kind"],
)


class LockDependencyUnavailable(ServiceUnavailable):
    """A route that needs the distributed lock while Redis is down: retry in 30 s."""

    code = "dependency_unavailable"

    def __init__(self, subsystem: str = "") -> None:
        super().__init__("Service temporarily unavailable", retry_after=30)
        fail_closed_total.labels(subsystem or "unknown").inc()


class AuthenticationUnavailable(DomainError):
    code = "authentication_failed"
    status = 401


_FAIL_CLOSED_ERRORS: dict[int, Callable[[], DomainError]] = {
    503: ServiceUnavailable,
    401: lambda: AuthenticationUnavailable("authentication failed"),
}


class RedisHealthMonitor:
    """CLOSED → OPEN after ``threshold`` consecutive failures; one probe after ``cooldown``."""

    def __init__(self, *, threshold: int = 3, cooldown_seconds: float | None = None) -> None:
        self.threshold = threshold
        self._cooldown_seconds = cooldown_seconds
        self._lock = threading.Lock()
        self._state = "CLOSED"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    def _set(self, state: str) -> None:
        if state != self._state:
            breaker_changed("redis", self._state, state, self._failures)
            self._state = state
        breaker_state.labels("redis").set({"CLOSED": 0, "OPEN": 1, "HALF_OPEN": 2}[state])

    @property
    def cooldown_seconds(self) -> float:
        """30 s unless given or set by REDIS_HEALTH_COOLDOWN_SECONDS."""
        if self._cooldown_seconds is not None:
            return self._cooldown_seconds
        return float(getattr(settings, "REDIS_HEALTH_COOLDOWN_SECONDS", 30.0))

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == "OPEN" and time.monotonic() - self._opened_at >= self.cooldown_seconds:
                self._set("HALF_OPEN")
            return self._state

    def available(self) -> bool:
        """May a Redis call be tried now? In HALF_OPEN only one probe at a time."""
        state = self.state
        with self._lock:
            if state == "CLOSED":
                return True
            if state == "HALF_OPEN" and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probe_in_flight = False
            if self._state != "CLOSED":
                self._set("CLOSED")

    def record_failure(self) -> None:
        with self._lock:
            self._probe_in_flight = False
            self._failures += 1
            if self._state == "HALF_OPEN" or self._failures >= self.threshold:
                self._opened_at = time.monotonic()
                self._set("OPEN")

    def reset(self) -> None:
        with self._lock:
            self._failures = 0
            self._probe_in_flight = False
            self._set("CLOSED")


monitor = RedisHealthMonitor()


# Subsystems whose refusal is the lock routes' 503 (code dependency_unavailable).
LOCK_SUBSYSTEMS = frozenset({"webhooks", "purchase_lock"})


def _degrade(subsystem: str, fallback: Callable[[], T] | None) -> T:
    rule = DEGRADATION[subsystem]
    degraded_total.labels(subsystem).inc()
    if rule.mode is Mode.FAIL_CLOSED:
        if subsystem in LOCK_SUBSYSTEMS:
            raise LockDependencyUnavailable(subsystem)
        raise _FAIL_CLOSED_ERRORS[rule.status or 503]()
    if fallback is None:
        raise RuntimeError(f"{subsystem} degrades to {rule.mode} but no fallback was given")
    return fallback()


def redis_guard(subsystem: str, operation: Callable[[], T], fallback: Callable[[], T] | None = None) -> T:
    """Run a Redis ``operation`` for ``subsystem``, or apply its degradation row."""
    if subsystem not in DEGRADATION:
        raise KeyError(f"no degradation rule for {subsystem!r}")
    if not monitor.available():
        return _degrade(subsystem, fallback)
    try:
        result = operation()
    except (redis.RedisError, OSError):
        monitor.record_failure()
        return _degrade(subsystem, fallback)
    monitor.record_success()
    return result
