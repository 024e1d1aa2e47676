"""Rate limits: one atomic Lua sliding window in Redis, a token bucket when Redis is down.

DRF's built-in throttles read the history, decide in Python and write it
back: two concurrent requests can both pass the last slot. Here the check and
the record are one Lua call. Tiers come from settings (``RATE_LIMITS``).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from finn.degradation import redis_guard
from finn.errors import DomainError

if TYPE_CHECKING:  # DRF imports throttles while building APIView: no runtime import
    from rest_framework.views import APIView
from finn.redis import register_script, run_script

_SLIDING_WINDOW = register_script(
    "rate_limit_sliding_window",
    """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  count = count + 1
  allowed = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local first = now
if oldest[2] then first = tonumber(oldest[2]) end
return {allowed, limit - count, tostring(first + window)}
""",
)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when a slot frees up

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))


class _TokenBucket:
    """Per-process fallback: ``limit`` tokens refilled evenly over the window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def hit(self, key: str, limit: int, window: float) -> RateDecision:
        now = time.monotonic()
        rate = limit / window
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(limit), now))
            tokens = min(float(limit), tokens + (now - updated) * rate)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            self._buckets[key] = (tokens, now)
        wait = 0.0 if allowed else (1 - tokens) / rate
        return RateDecision(allowed=allowed, limit=limit, remaining=int(tokens), reset_at=time.time() + wait)

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


local_buckets = _TokenBucket()


def tier_limits(tier: str) -> tuple[int, int]:
    limits: dict[str, tuple[int, int]] = settings.RATE_LIMITS
    return limits[tier]


def rate_limit_hit(*, tier: str, identity: str, subsystem: str = "rate_limit") -> RateDecision:
    """Count one request of ``identity`` in ``tier``; atomic in Redis.

    When Redis is down the degradation row of ``subsystem`` applies: the
    default falls back to a local token bucket; ``webhooks`` fails closed.
    """
    limit, window = tier_limits(tier)
    key = f"finn:ratelimit:{tier}:{identity}"

    def in_redis() -> RateDecision:
        now_ms = int(time.time() * 1000)
        allowed, remaining, reset_ms = run_script(
            _SLIDING_WINDOW, [key], [now_ms, window * 1000, limit, f"{now_ms}-{uuid.uuid4().hex[:8]}"]
        )
        return RateDecision(
            allowed=bool(int(allowed)), limit=limit, remaining=max(0, int(remaining)), reset_at=int(reset_ms) / 1000
        )

    return redis_guard(subsystem, in_redis, fallback=lambda: local_buckets.hit(key, limit, float(window)))


class RateLimited(DomainError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(max(1, retry_after))


def limit_or_raise(*, tier: str, identity: str) -> None:
    """Count one request; 429 ``rate_limited`` with Retry-After when the tier's window is full."""
    decision = rate_limit_hit(tier=tier, identity=identity)
    if not decision.allowed:
        raise RateLimited(f"too many requests ({tier})", decision.retry_after)


def client_ip(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown")


class TierThrottle(BaseThrottle):
    """A DRF throttle for one tier; the decision is kept for the response headers."""

    tier = "free"

    def identity(self, request: Request) -> str:
        return client_ip(request._request)

    def allow_request(self, request: Request, view: APIView) -> bool:
        decision = rate_limit_hit(tier=self.tier, identity=self.identity(request))
        request._request.finn_rate_limit = decision  # type: ignore[attr-defined]
        self._decision = decision
        return decision.allowed

    def wait(self) -> float | None:
        return float(self._decision.retry_after)


class DefaultThrottle(TierThrottle):
    """API-key tier for authenticated callers, the free per-IP tier for everyone else."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        self.tier = "api_key" if getattr(request.user, "account_id", None) else "free"
        return super().allow_request(request, view)

    def identity(self, request: Request) -> str:
        api_key_id = getattr(request.user, "api_key_id", None)
        if api_key_id:
            return f"key:{api_key_id}"
        account_id = getattr(request.user, "account_id", None)  # a sign-in session
        return f"account:{account_id}" if account_id else client_ip(request._request)


class ChallengeThrottle(TierThrottle):
    tier = "challenge"


class RateLimitHeadersMiddleware:
    """Adds X-RateLimit-* headers (and Retry-After on 429) from the request's decision."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = self.get_response(request)
        decision: RateDecision | None = getattr(request, "finn_rate_limit", None)
        if decision is not None:
            response["X-RateLimit-Limit"] = str(decision.limit)
            response["X-RateLimit-Remaining"] = str(decision.remaining)
            response["X-RateLimit-Reset"] = str(math.ceil(decision.reset_at))
            if response.status_code == 429:
                response["Retry-After"] = str(decision.retry_after)
        return response
