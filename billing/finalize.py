"""Finalize committed entries with the upstream ledger (orchestration).

One attempt: take the entry's Redis lock (fencing token), ask the finalize
breaker, POST upstream outside any transaction, then record the outcome with
a fenced conditional UPDATE through the services. The entries table is the
queue (``state = FINALIZE_PENDING`` and ``next_attempt_at``); Celery only
carries wake-ups, so a lost message or a killed worker delays an entry, never
loses it. Redis trouble defers the attempt; it never fails the entry.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import connection, connections
from django.db.models import Count

from billing import services, upstream
from billing.errors import FenceStale, InvalidTransition
from billing.metrics import finalize_attempts_total, finalize_escalations_total, finalize_pending_entries, rejected
from billing.models import BillingEntry
from billing.states import EntryState
from finn import clock
from finn.breaker import CircuitBreaker
from finn.locks import Job, fence_raise, job_lease, lock_acquire, lock_release
from finn.queue import task_send
from finn.registry import breaker_register

logger = logging.getLogger(__name__)

FENCE_KEY = "billing:lock:fence"
DEFER_SECONDS = 5  # when Redis is unreachable
FINALIZE_BULK_REPLAY_TASK = "billing.tasks.finalize_bulk_replay_task"


def entry_lock_key(entry_id: str) -> str:
    return f"billing:lock:{entry_id}"


@breaker_register("finalize")
def finalize_breaker() -> CircuitBreaker:
    return CircuitBreaker(
        name="finalize",
        failure_threshold=settings.FINALIZE_BREAKER_THRESHOLD,
        window_seconds=settings.FINALIZE_BREAKER_WINDOW_SECONDS,
        cooldown_seconds=settings.FINALIZE_BREAKER_COOLDOWN_SECONDS,
    )


def retry_delay(failures: int) -> int:
    """Seconds before the next attempt after ``failures`` failed ones (1, 2, 4, 8, 16)."""
    delays: list[int] = settings.FINALIZE_RETRY_DELAYS
    return delays[min(failures, len(delays)) - 1]


def _defer(entry_id: str, *, now: datetime, seconds: float, why: str) -> str:
    try:
        services.entry_finalize_reschedule(
            entry_id=entry_id, next_attempt_at=now + timedelta(seconds=seconds), now=now, error=why
        )
    except InvalidTransition:
        return "not_pending"
    finalize_attempts_total.labels("deferred").inc()
    return "deferred"


def entry_finalize_attempt(*, entry_id: str, now: datetime | None = None, replay: bool = False) -> str:
    """Try to finalize one entry once; return the outcome as a word.

    ``replay`` retries a poison (FINALIZE_FAILED) entry: success acks it,
    failure leaves it failed (no attempts are added).
    """
    now = now or clock.now()
    row = (
        BillingEntry.objects.filter(pk=entry_id)
        .values("state", "account_id", "actual_cost", "correlation_id", "finalize_attempts")
        .first()
    )
    wanted = EntryState.FINALIZE_FAILED if replay else EntryState.FINALIZE_PENDING
    if row is None or row["state"] != wanted:
        return "not_pending"
    if not settings.FINALIZE_URL:
        return "not_configured"
    try:
        lock = lock_acquire(
            key=entry_lock_key(entry_id), fence_key=FENCE_KEY, ttl_seconds=settings.FINALIZE_LOCK_TTL_SECONDS
        )
    except (redis.RedisError, OSError):
        return "deferred" if replay else _defer(entry_id, now=now, seconds=DEFER_SECONDS, why="redis_unavailable")
    if not lock.acquired:
        finalize_attempts_total.labels(lock.reason).inc()
        rejected(lock.reason)
        return lock.reason
    assert lock.token is not None
    try:
        return _attempt_locked(entry_id=entry_id, row=row, token=lock.token, now=now, replay=replay)
    finally:
        with contextlib.suppress(redis.RedisError, OSError):  # else the lock expires on its own
            lock_release(key=lock.key, owner=lock.owner)


def _attempt_locked(*, entry_id: str, row: Mapping[str, object], token: int, now: datetime, replay: bool) -> str:
    breaker = finalize_breaker()
    try:
        admission = breaker.allow()
    except (redis.RedisError, OSError):
        return "deferred" if replay else _defer(entry_id, now=now, seconds=DEFER_SECONDS, why="redis_unavailable")
    if not admission.allowed:
        if replay:
            return "deferred"
        return _defer(entry_id, now=now, seconds=max(1.0, admission.retry_after_ms / 1000), why="circuit_open")
    result = upstream.finalize_post(
        billing_entry_id=entry_id,
        account_id=int(str(row["account_id"])),
        actual_cost=int(str(row["actual_cost"])),
        correlation_id=str(row["correlation_id"]),
    )
    try:
        breaker.record_success() if result.acked else breaker.record_failure()
    except (redis.RedisError, OSError):
        logger.warning("finalize breaker not updated: Redis unavailable", extra={"billing_entry_id": entry_id})
    now = clock.now()
    try:
        if result.acked:
            services.entry_finalize_ack(
                entry_id=entry_id, response_status=result.status or 0, now=now, fence_token=token
            )
            outcome = "acked"
        elif replay:
            outcome = "replay_failed"
        else:
            failures = int(str(row["finalize_attempts"])) + 1
            if failures >= settings.FINALIZE_MAX_ATTEMPTS:
                services.entry_finalize_fail(
                    entry_id=entry_id, attempt=failures, reason=result.error, now=now, fence_token=token
                )
                outcome = "failed"
            else:
                services.entry_finalize_reschedule(
                    entry_id=entry_id,
                    next_attempt_at=now + timedelta(seconds=retry_delay(failures)),
                    now=now,
                    attempts=failures,
                    error=result.error,
                    fence_token=token,
                )
                outcome = "retry_scheduled"
    except FenceStale as exc:
        # Our lock expired and a newer holder wrote first; make sure the
        # Redis counter is ahead of what Postgres stored (failover case).
        with contextlib.suppress(redis.RedisError, OSError):
            fence_raise(fence_key=FENCE_KEY, minimum=int(exc.extra["stored"]))
        outcome = "stale"
    except InvalidTransition:
        outcome = "not_pending"
    finalize_attempts_total.labels(outcome).inc()
    logger.info(
        "finalize attempt",
        extra={
            "billing_entry_id": entry_id,
            "outcome": outcome,
            "upstream_status": result.status,
            "error": result.error,
        },
    )
    return outcome


@dataclass(frozen=True)
class SweepResult:
    enqueued: int
    pending: int


def finalize_sweep(*, now: datetime, grace_seconds: int = 10, batch_size: int = 500) -> SweepResult:
    """Re-enqueue pending entries whose attempt is overdue (lost messages, dead workers).

    Each picked entry is leased for 60 s (``next_attempt_at`` moved ahead) so
    the next sweep does not enqueue it again while its message waits.
    """
    with job_lease(Job.FINALIZE_SWEEP) as lease:
        if lease is None:
            return SweepResult(enqueued=0, pending=-1)
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE billing_billingentry SET next_attempt_at = %s WHERE id IN ("
                " SELECT id FROM billing_billingentry WHERE state = 'FINALIZE_PENDING' AND next_attempt_at <= %s"
                " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
                [now + timedelta(seconds=60), now - timedelta(seconds=grace_seconds), batch_size],
            )
            due = [r[0] for r in cursor.fetchall()]
            cursor.execute("SELECT count(*) FROM billing_billingentry WHERE state = 'FINALIZE_PENDING'")
            pending = int(cursor.fetchone()[0])
    for entry_id in due:
        services.entry_finalize_enqueue(entry_id, on_commit=False)
    finalize_pending_entries.set(pending)
    return SweepResult(enqueued=len(due), pending=pending)


def finalize_escalate(*, now: datetime, batch_size: int = 500) -> int:
    """Escalate poison older than FINALIZE_ESCALATION_HOURS, once per entry."""
    cutoff = now - timedelta(hours=settings.FINALIZE_ESCALATION_HOURS)
    escalated = 0
    with job_lease(Job.FINALIZE_ESCALATION) as lease:
        if lease is None:
            return 0
        candidates = list(
            BillingEntry.objects.filter(
                state=EntryState.FINALIZE_FAILED, escalated_at__isnull=True, updated_at__lte=cutoff
            )
            .order_by("updated_at")
            .values("id", "account_id", "actual_cost", "finalize_attempts", "updated_at")[:batch_size]
        )
        for row in candidates:
            if services.entry_finalize_escalate(entry_id=row["id"], now=now):
                escalated += 1
                finalize_escalations_total.inc()
                logger.critical(
                    "finalize poison escalation",
                    extra={
                        "billing_entry_id": row["id"],
                        "account_id": row["account_id"],
                        "actual_cost": str(row["actual_cost"]),
                        "attempts": row["finalize_attempts"],
                        "failed_at": row["updated_at"].isoformat(),
                    },
                )
    return escalated


def finalize_bulk_replay_enqueue(*, concurrency: int, limit: int) -> bool:
    """Queue a bulk replay of poison entries (staff API and admin); the worker runs it."""
    return task_send(FINALIZE_BULK_REPLAY_TASK, args=(concurrency, limit))


def finalize_bulk_replay(*, concurrency: int | None = None, limit: int = 100) -> dict[str, int]:
    """Retry poison entries upstream, at most ``concurrency`` at once."""
    concurrency = concurrency or settings.FINALIZE_REPLAY_CONCURRENCY
    ids = list(
        BillingEntry.objects.filter(state=EntryState.FINALIZE_FAILED)
        .order_by("updated_at")
        .values_list("id", flat=True)[:limit]
    )

    def replay(entry_id: str) -> str:
        try:
            return entry_finalize_attempt(entry_id=entry_id, replay=True)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = Counter(pool.map(replay, ids))
    return dict(outcomes)


@dataclass(frozen=True)
class FinalizeHealth:
    breaker_state: str
    pending: int
    failed: int
    healthy: bool


def finalize_health() -> FinalizeHealth:
    """Pending count >= FINALIZE_PENDING_UNHEALTHY or a non-closed breaker is unhealthy."""
    counts = dict(
        BillingEntry.objects.filter(state__in=[EntryState.FINALIZE_PENDING, EntryState.FINALIZE_FAILED])
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    pending = int(counts.get(EntryState.FINALIZE_PENDING, 0))
    try:
        state = finalize_breaker().state()
    except (redis.RedisError, OSError):
        state = "UNKNOWN"
    finalize_pending_entries.set(pending)
    healthy = pending < settings.FINALIZE_PENDING_UNHEALTHY and state == "CLOSED"
    return FinalizeHealth(
        breaker_state=state, pending=pending, failed=int(counts.get(EntryState.FINALIZE_FAILED, 0)), healthy=healthy
    )
