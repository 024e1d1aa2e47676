"""Locks: Redis locks with fencing tokens, and PostgreSQL advisory locks.

Redis lock (dedupes work, always has a timeout): ``SET key owner NX EX ttl``;
each acquisition also takes a fencing token from a Redis counter (INCR).
Release is compare-and-delete, so only the owner can release. A lock can
expire while its holder is still working (a slow HTTP call, a GC pause, a
Redis failover); that is why the token exists: the protected row stores the
highest token accepted and every locked write is a conditional UPDATE
requiring ``token > stored`` — PostgreSQL, not Redis, decides who may write.

Advisory locks (one-at-a-time jobs): ``pg_try_advisory_lock`` keyed by
``AdvisoryLock``; the session lock is released in ``finally`` and by
PostgreSQL itself if the process dies.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection

from finn.redis import register_script, run_script

logger = logging.getLogger(__name__)

FENCE_MAX = 2**53 - 1  # tokens must survive a round trip through a JSON/JS double

_ACQUIRE = register_script(
    "lock_acquire",
    """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  if token > tonumber(ARGV[3]) then
    redis.call('DEL', KEYS[1])
    return {-1, tostring(token)}
  end
  return {1, tostring(token)}
end
return {0, redis.call('GET', KEYS[1]) or ''}
""",
)

_RELEASE = register_script(
    "lock_release",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)

_RAISE_FENCE = register_script(
    "fence_raise",
    """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
""",
)


@dataclass(frozen=True)
class LockResult:
    """Outcome of an acquisition; contention is a result, never an exception."""

    acquired: bool
    reason: str  # "acquired" | "lock_contention" | "fence_overflow"
    key: str
    owner: str
    token: int | None = None
    holder: str | None = None


def lock_acquire(*, key: str, fence_key: str, ttl_seconds: int = 30, owner: str | None = None) -> LockResult:
    """Try once to take ``key``; on success the result carries a fencing token."""
    owner = owner or uuid.uuid4().hex
    status, value = run_script(_ACQUIRE, [key, fence_key], [owner, ttl_seconds, FENCE_MAX])
    status = int(status)
    if status == 1:
        return LockResult(acquired=True, reason="acquired", key=key, owner=owner, token=int(value))
    if status == -1:
        logger.critical("fencing token overflow; lock refused", extra={"key": key, "token": value})
        return LockResult(acquired=False, reason="fence_overflow", key=key, owner=owner)
    return LockResult(acquired=False, reason="lock_contention", key=key, owner=owner, holder=value or None)


def lock_release(*, key: str, owner: str) -> bool:
    """Delete ``key`` only if ``owner`` still holds it."""
    return bool(run_script(_RELEASE, [key], [owner]))


def fence_raise(*, fence_key: str, minimum: int) -> bool:
    """Move the token counter up to ``minimum`` (after Redis lost it, say).

    Without this, a counter reset by a failover would hand out tokens that
    PostgreSQL refuses forever; with it, the next acquisition is valid again.
    """
    return bool(run_script(_RAISE_FENCE, [fence_key], [minimum]))


class AdvisoryLock(enum.IntEnum):
    """Keys of the PostgreSQL advisory locks of one-at-a-time jobs."""

    HOLD_EXPIRY_SWEEP = 710_001
    FINALIZE_SWEEP = 710_002
    RECONCILIATION = 710_003
    AUDIT_CHAIN = 710_004
    FINALIZE_ESCALATION = 710_005
    LEDGER_CHECK = 710_006


@contextmanager
def advisory_lock(key: AdvisoryLock) -> Iterator[bool]:
    """Yield True if this process now runs the job ``key``, False if another does."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [int(key)])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [int(key)])


def xact_lock(name: str, *, wait: bool = True) -> bool:
    """Take the transaction-scoped advisory lock named ``name`` (released at commit or rollback).

    ``wait=False`` tries once and returns whether it was taken. Names are hashed in
    PostgreSQL (``hashtextextended``), so any string keys a lock: ``purchase:<member>``,
    ``x402:credit:<wallet>``, ``webhook:<event>``.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("xact_lock needs the caller's transaction")
    function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(hashtextextended(%s, 0))", [name])
        row = cursor.fetchone()
    return True if wait else bool(row[0])


def drain_batches(key: AdvisoryLock, batch: Callable[[], int], *, batch_size: int, max_batches: int) -> int | None:
    """Run ``batch()`` (one transaction each) until it returns fewer than ``batch_size``.

    One process at a time (advisory lock ``key``); None if another holds it.
    ``max_batches`` bounds one run so a huge backlog cannot starve the worker.
    """
    with advisory_lock(key) as acquired:
        if not acquired:
            return None
        total = 0
        for _ in range(max_batches):
            count = batch()
            total += count
            if count < batch_size:
                break
        return total
