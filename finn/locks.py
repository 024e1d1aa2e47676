"""Locks: Redis locks with fencing tokens, and PostgreSQL advisory locks.

Redis lock (dedupes work, always has a timeout): ``SET key owner NX EX ttl``;
each acquisition also takes a fencing token from a Redis counter (INCR).
Release is compare-and-delete, so only the owner can release. A lock can
expire while its holder is still working (a slow HTTP call, a GC pause, a
Redis failover); that is why the token exists: the protected row stores the
highest token accepted and every locked write is a conditional UPDATE
requiring ``token > stored`` — PostgreSQL, not Redis, decides who may write.

One-at-a-time jobs: a lease row per ``Job`` (``job_lease``), taken, renewed and freed by
single statements, so nothing depends on the database session (a transaction-mode pooler hands
each transaction a different server connection; a session-level advisory lock taken on one was
unlocked on another and stayed held). Serial steps inside a transaction use ``xact_lock``
(released at commit or rollback). finn takes no session-level lock anywhere.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
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


class Job(enum.StrEnum):
    """One-at-a-time jobs, each with a lease row in ``finn_joblease``."""

    HOLD_EXPIRY_SWEEP = "hold_expiry_sweep"
    FINALIZE_SWEEP = "finalize_sweep"
    RECONCILIATION = "reconciliation"
    AUDIT_CHAIN = "audit_chain"
    FINALIZE_ESCALATION = "finalize_escalation"
    LEDGER_CHECK = "ledger_check"


# How long a lease lasts without renewal: how long a job stays paused after its holder died.
# Batch jobs renew after every batch (a batch takes well under a second), so these are short.
JOB_LEASE_SECONDS = {
    Job.HOLD_EXPIRY_SWEEP: 10,
    Job.FINALIZE_SWEEP: 30,
    Job.RECONCILIATION: 120,
    Job.AUDIT_CHAIN: 30,
    Job.FINALIZE_ESCALATION: 300,
    Job.LEDGER_CHECK: 900,
}

_LEASE_TAKE = """
INSERT INTO finn_joblease (name, holder, expires_at, acquired_at)
VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s), clock_timestamp())
ON CONFLICT (name) DO UPDATE
   SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, acquired_at = EXCLUDED.acquired_at
 WHERE finn_joblease.expires_at <= clock_timestamp()
RETURNING holder"""
_LEASE_RENEW = (
    "UPDATE finn_joblease SET expires_at = clock_timestamp() + make_interval(secs => %s)"
    " WHERE name = %s AND holder = %s AND expires_at > clock_timestamp()"
)
_LEASE_FREE = "UPDATE finn_joblease SET expires_at = clock_timestamp() WHERE name = %s AND holder = %s"


@dataclass
class Lease:
    """A held job lease; ``renew()`` is False once another holder has taken the job."""

    job: Job
    holder: str
    seconds: int

    def renew(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(_LEASE_RENEW, [self.seconds, str(self.job), self.holder])
            return cursor.rowcount == 1


def _holder() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@contextmanager
def job_lease(job: Job, *, seconds: int | None = None) -> Iterator[Lease | None]:
    """Yield a ``Lease`` if this process now runs ``job``, None if another holder does.

    Each step is one statement on the database clock (no session state), so it is safe behind
    a transaction-mode pooler, across nodes and across app-server clock jumps; the lease is
    freed on exit, and by expiry if the process dies. A lease can expire under a stalled holder,
    so every job is also safe to run twice at once (compare-and-set rows, SKIP LOCKED, or a
    transaction-scoped lock around the step that must be serial).
    """
    lease = Lease(job=job, holder=_holder(), seconds=seconds or JOB_LEASE_SECONDS[job])
    with connection.cursor() as cursor:
        cursor.execute(_LEASE_TAKE, [str(job), lease.holder, lease.seconds])
        taken = cursor.fetchone() is not None
    if not taken:
        yield None
        return
    try:
        yield lease
    finally:
        with connection.cursor() as cursor:
            cursor.execute(_LEASE_FREE, [str(job), lease.holder])


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


def drain_batches(job: Job, batch: Callable[[], int], *, batch_size: int, max_batches: int) -> int | None:
    """Run ``batch()`` (one transaction each) until it returns fewer than ``batch_size``.

    One holder at a time (the lease of ``job``, renewed after each batch; a run that lost it
    stops); None if another holds it. ``max_batches`` bounds one run so a huge backlog cannot
    starve the worker.
    """
    with job_lease(job) as lease:
        if lease is None:
            return None
        total = 0
        for _ in range(max_batches):
            count = batch()
            total += count
            if count < batch_size or not lease.renew():
                break
        return total
