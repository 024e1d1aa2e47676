"""Rate limits: atomic Lua in Redis, a token bucket when Redis is down.

DRF's built-in throttles read the history, decide in Python and write it
back: two concurrent requests can both pass the last slot. Here the check and
the record are one Lua call. Tiers come from settings (``RATE_LIMITS``).

Limits below ``SYNCED_MIN_LIMIT`` (end users, unauthenticated callers) use an exact sliding
window: one Redis call per request. High limits (a gateway's service key, 100,000/min by
default) are counted in each process and merged in Redis once a second
(``_SyncedCounters``), so the hot path pays no Redis round trip for them; such a limit is
exact to within one sync window.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from finn import clock
from finn.degradation import redis_guard
from finn.errors import DomainError
from finn.redis import SCRIPTS, get_redis, register_script, run_script

if TYPE_CHECKING:  # DRF imports throttles while building APIView: no runtime import
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

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


_SYNC = register_script(
    "rate_limit_sync",
    """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local add = tonumber(ARGV[3])
local current = math.floor(now / window)
local cur_key = KEYS[1] .. ':' .. current
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. (current - 1)) or '0')
local cur = add
if add > 0 then
  cur = redis.call('INCRBY', cur_key, add)
  redis.call('PEXPIRE', cur_key, window * 2)
else
  cur = tonumber(redis.call('GET', cur_key) or '0')
end
return {math.floor(prev * (1 - (now % window) / window)) + cur, tostring((current + 1) * window)}
""",
)
SYNCED_MIN_LIMIT = 1000
SYNC_SECONDS = 1.0


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when a slot frees up

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - clock.time(allow_wall=True)))


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
        return RateDecision(
            allowed=allowed, limit=limit, remaining=int(tokens), reset_at=clock.time(allow_wall=True) + wait
        )

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


local_buckets = _TokenBucket()


class _SyncedCounters:
    """High limits counted in this process and merged with every process's counts in Redis.

    A request is decided here: allowed while (all processes' count at the last sync + this
    process's count since) stays under the limit. A thread pushes this process's counts to
    Redis every ``SYNC_SECONDS`` (one pipelined call per active key: INCRBY into a sliding
    window counter, which answers the window's total). The limit is exact to within one sync
    window: processes that each still see room may together admit up to one second of their
    traffic beyond it. With Redis down the counts stay local (the degradation table's
    in-memory fallback for rate limits).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key → [pending (not yet pushed), known (all processes, at the last sync), reset_at,
        #        window seconds, last hit (monotonic), in flight (pushed, answer not yet back)]
        self._state: dict[str, list[Any]] = {}
        self._wake = threading.Event()
        self._pid = 0
        self._failing = False

    def hit(self, key: str, limit: int, window: int) -> RateDecision:
        now = time.monotonic()
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (or after a fork)
                self._pid = os.getpid()
                self._state.clear()
                threading.Thread(target=self._run, name="rate-limit-sync", daemon=True).start()
            state = self._state.get(key)
            if state is None:
                state = self._state[key] = [0, 0, clock.time(allow_wall=True) + window, window, now, 0]
            state[4] = now
            used = state[0] + state[1] + state[5]
            if used >= limit:
                return RateDecision(False, limit, 0, state[2])
            state[0] += 1
            return RateDecision(True, limit, limit - used - 1, state[2])

    def _run(self) -> None:
        while True:
            self._wake.wait(SYNC_SECONDS)
            self._wake.clear()
            try:
                self.sync()
                self._failing = False
            except Exception as exc:  # Redis down: keep counting locally, retry next tick
                if not self._failing:  # one line per outage, not one per second
                    logger.warning("rate limit sync failed", extra={"error": type(exc).__name__})
                self._failing = True

    def sync(self) -> None:
        """Push pending counts and read every active key's window total (one pipeline)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, st in self._state.items() if now - st[4] > st[3] and st[0] == 0 and st[5] == 0]:
                del self._state[key]  # idle for a whole window: forget it
            # Only keys counted since the last sync: their push also answers the window's total.
            # An idle key's view of other processes ages until its next hit is pushed.
            work = [(key, st[0], st[3]) for key, st in self._state.items() if st[0] > 0]
            for key, pending, _ in work:  # in flight until the answer: still counted by hit()
                self._state[key][0] -= pending
                self._state[key][5] += pending
        if not work:
            return
        now_ms = int(clock.time(allow_wall=True) * 1000)
        client = get_redis()
        script = client.register_script(SCRIPTS["rate_limit_sync"])
        pipe = client.pipeline(transaction=False)
        for key, pending, window in work:
            script(keys=[key], args=[now_ms, window * 1000, pending], client=pipe)
        try:
            answers = pipe.execute()
        except Exception:
            with self._lock:  # not pushed: count it again next time
                for key, pending, _ in work:
                    if key in self._state:
                        self._state[key][0] += pending
                        self._state[key][5] -= pending
            raise
        with self._lock:
            for (key, pending, _), (total, reset_ms) in zip(work, answers, strict=True):
                if key in self._state:
                    self._state[key][5] -= pending  # now part of the window's total
                    self._state[key][1] = int(total)
                    self._state[key][2] = int(reset_ms) / 1000

    def clear(self) -> None:
        with self._lock:
            self._state.clear()


synced_counters = _SyncedCounters()


def tier_limits(tier: str) -> tuple[int, int]:
    limits: dict[str, tuple[int, int]] = settings.RATE_LIMITS
    return limits[tier]


def rate_limit_hit(
    *, tier: str, identity: str, subsystem: str = "rate_limit", limit: int | None = None
) -> RateDecision:
    """Count one request of ``identity`` in ``tier`` (``limit`` overrides the tier's); atomic in Redis.

    When Redis is down the degradation row of ``subsystem`` applies: the
    default falls back to a local token bucket; ``webhooks`` fails closed.
    """
    tier_limit, window = tier_limits(tier)
    limit = limit or tier_limit
    key = f"finn:ratelimit:{tier}:{identity}"
    # In-process counting only where Redis down means "count in memory" anyway; a route that
    # fails closed without Redis (webhooks) keeps asking Redis, which is how it notices.
    if limit >= SYNCED_MIN_LIMIT and subsystem == "rate_limit":
        return synced_counters.hit(key, limit, window)

    def in_redis() -> RateDecision:
        now_ms = int(clock.time(allow_wall=True) * 1000)
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

    def limit(self, request: Request) -> int | None:
        return None

    def allow_request(self, request: Request, view: APIView) -> bool:
        decision = rate_limit_hit(tier=self.tier, identity=self.identity(request), limit=self.limit(request))
        request._request.finn_rate_limit = decision  # type: ignore[attr-defined]
        self._decision = decision
        return decision.allowed

    def wait(self) -> float | None:
        return float(self._decision.retry_after)


class DefaultThrottle(TierThrottle):
    """Per API key (a service: its own override, else the api_key tier), per session, or the free per-IP tier."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        if getattr(request.user, "api_key_id", None):
            self.tier = "api_key"
        elif getattr(request.user, "account_id", None):
            self.tier = "session"
        else:
            self.tier = "free"
        return super().allow_request(request, view)

    def limit(self, request: Request) -> int | None:
        per_minute = getattr(request.auth, "rate_limit_per_minute", None) if self.tier == "api_key" else None
        if not per_minute:
            return None
        _, window = tier_limits("api_key")
        return max(1, per_minute * window // 60)

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
