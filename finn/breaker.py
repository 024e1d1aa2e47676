"""Circuit breakers whose state lives in Redis, so every process agrees.

CLOSED --(threshold failures within the sliding window)--> OPEN
OPEN --(cooldown elapsed)--> HALF_OPEN, which admits exactly one probe across
all workers (a ``SET NX`` probe token with its own timeout, so a prober that
dies does not wedge the breaker) --success--> CLOSED, --failure--> OPEN.

Each transition happens inside one Lua script, so exactly one caller sees it
and logs it (one line per change). The state is exported as a gauge per
breaker (0 closed, 1 open, 2 half-open). Redis errors propagate: the caller
decides whether that defers work (finalize does) or fails closed.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from prometheus_client import Gauge

from finn import clock
from finn.redis import get_redis, register_script, run_script

logger = logging.getLogger(__name__)

STATE_VALUES = {"CLOSED": 0, "OPEN": 1, "HALF_OPEN": 2}

breaker_state = Gauge(
    "circuit_breaker_state",
    "Circuit breaker state (0 closed, 1 open, 2 half-open), one series per breaker.",
    ["breaker"],
    multiprocess_mode="mostrecent",
)


def breaker_changed(name: str, before: str, state: str, failure_count: int) -> None:
    """One JSON log line per state change (from, to, failure_count, timestamp)."""
    logger.warning(
        "circuit breaker state change",
        extra={
            "breaker": name,
            "from": before,
            "to": state,
            "failure_count": failure_count,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


# KEYS: state hash, failures zset, probe key. ARGV: now_ms, cooldown_ms, probe_ttl_ms, owner
_ALLOW = register_script(
    "breaker_allow",
    """
local state = redis.call('HGET', KEYS[1], 'state') or 'CLOSED'
local before = state
if state == 'CLOSED' then return {1, state, before} end
if state == 'OPEN' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
  if tonumber(ARGV[1]) - opened < tonumber(ARGV[2]) then
    return {0, state, before, tostring(opened + tonumber(ARGV[2]) - tonumber(ARGV[1]))}
  end
  state = 'HALF_OPEN'
  redis.call('HSET', KEYS[1], 'state', state)
end
if redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[3]) then
  return {1, state, before}
end
return {0, state, before, '1000'}
""",
)

# ARGV: now_ms, window_ms, threshold, member
_FAILURE = register_script(
    "breaker_failure",
    """
local state = redis.call('HGET', KEYS[1], 'state') or 'CLOSED'
if state == 'OPEN' then return {state, state} end
if state == 'HALF_OPEN' then
  redis.call('HSET', KEYS[1], 'state', 'OPEN', 'opened_at', ARGV[1])
  redis.call('DEL', KEYS[3], KEYS[2])
  return {'OPEN', state}
end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'OPEN', 'opened_at', ARGV[1])
  redis.call('DEL', KEYS[2])
  return {'OPEN', state}
end
return {state, state}
""",
)

_SUCCESS = register_script(
    "breaker_success",
    """
local state = redis.call('HGET', KEYS[1], 'state') or 'CLOSED'
if state == 'HALF_OPEN' then
  redis.call('HSET', KEYS[1], 'state', 'CLOSED')
  redis.call('DEL', KEYS[2], KEYS[3])
  return {'CLOSED', state}
end
return {state, state}
""",
)


@dataclass(frozen=True)
class Admission:
    allowed: bool
    state: str
    retry_after_ms: int = 0


@dataclass(frozen=True)
class CircuitBreaker:
    """One named breaker; cheap to construct, all state is in Redis."""

    name: str
    failure_threshold: int
    window_seconds: float
    cooldown_seconds: float
    probe_timeout_seconds: float = 60.0

    def _keys(self) -> list[str]:
        base = f"billing:breaker:{self.name}"
        return [base, f"{base}:failures", f"{base}:probe"]

    def _observe(self, state: str, before: str, failures: int = 0) -> None:
        breaker_state.labels(self.name).set(STATE_VALUES.get(state, 0))
        if state != before:
            breaker_changed(self.name, before, state, failures)

    @staticmethod
    def _now_ms() -> int:
        return int(clock.time(allow_wall=True) * 1000)

    def allow(self) -> Admission:
        """May a call go ahead now? In HALF_OPEN only the single probe may."""
        result = run_script(
            _ALLOW,
            self._keys(),
            [
                self._now_ms(),
                int(self.cooldown_seconds * 1000),
                int(self.probe_timeout_seconds * 1000),
                uuid.uuid4().hex,
            ],
        )
        allowed, state, before = int(result[0]), str(result[1]), str(result[2])
        self._observe(state, before)
        retry_after = int(result[3]) if len(result) > 3 else 0
        return Admission(allowed=bool(allowed), state=state, retry_after_ms=retry_after)

    def record_failure(self) -> str:
        state, before = run_script(
            _FAILURE,
            self._keys(),
            [self._now_ms(), int(self.window_seconds * 1000), self.failure_threshold, uuid.uuid4().hex],
        )
        # Opening from CLOSED took `threshold` failures in the window; from HALF_OPEN, the probe's one.
        self._observe(str(state), str(before), self.failure_threshold if str(before) == "CLOSED" else 1)
        return str(state)

    def record_success(self) -> str:
        state, before = run_script(_SUCCESS, self._keys(), [])
        self._observe(str(state), str(before))
        return str(state)

    def state(self) -> str:
        raw = get_redis().hget(self._keys()[0], "state")
        return str(raw) if raw else "CLOSED"

    def reset(self) -> None:
        get_redis().delete(*self._keys())
        self._observe("CLOSED", "CLOSED")
