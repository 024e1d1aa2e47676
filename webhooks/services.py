"""Receive and process provider events: lock first, then verify, validate, execute, record.

Receive (HTTP): verify the signature on the raw body, store the event (unique
on provider + event id), enqueue on commit, answer 200 — processing is
asynchronous and the row is the queue, so a 200 never loses an event.

Process (Celery), in the seeds' lock-first order:
LOCK (Redis, owner token; a Postgres advisory lock when Redis is lost)
→ VERIFY the Redis processed marker → VERIFY the row's status
→ VALIDATE the type → EXECUTE and RECORD in one transaction
→ marker (24 h) after commit → UNLOCK (owner-checked).
A failed handler is recorded ``failed`` and retried with backoff; after 5
attempts the event is ``dead`` (listed in the admin, replayable). Only a
``processed`` event is a duplicate.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from prometheus_client import Counter, Histogram

from billing import services as billing_services
from billing.metrics import rejected
from credits.services import card_credit_pack_mint
from finn import clock
from finn.audit import audit_append
from finn.degradation import lock_fallbacks_total, monitor
from finn.locks import lock_acquire, lock_release, xact_lock
from finn.queue import task_send
from finn.ratelimit import local_buckets
from finn.redis import get_redis
from webhooks.adapters import NormalizedEvent
from webhooks.models import WebhookEvent

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
PROCESSED_MARKER_SECONDS = 24 * 3600
EXTENDED_LOCK_TYPES = frozenset({"boost_purchase", "badge_purchase"})

webhook_outcomes_total = Counter(
    "webhook_events_total", "Webhook events by provider and status.", ["provider", "status"]
)
webhook_processing_lag_seconds = Histogram(
    "webhook_processing_lag_seconds",
    "From receipt to the end of processing.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
)


@dataclass(frozen=True)
class Receipt:
    event_pk: int
    event_id: str
    status: str  # "accepted" | "duplicate"


def webhook_receive(*, provider: str, event: NormalizedEvent, now: datetime) -> Receipt:
    """Store a verified event once; (re)enqueue it unless it is already processed."""
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO webhooks_webhookevent (provider, provider_event_id, event_type, raw_type, occurred_at,"
            " payload, status, attempts, last_error, next_attempt_at, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'pending', 0, '', %s, %s)"
            " ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING id",
            [
                provider,
                event.event_id,
                event.event_type,
                event.raw_type,
                event.occurred_at,
                _json(event.data),
                now,
                now,
            ],
        )
        row = cursor.fetchone()
        if row is not None:
            pk = int(row[0])
        else:
            existing = WebhookEvent.objects.select_for_update().get(provider=provider, provider_event_id=event.event_id)
            pk = existing.pk
            if existing.status in (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.SKIPPED):
                return Receipt(event_pk=pk, event_id=event.event_id, status="duplicate")
            # A failed or dead event delivered again is processed again, not dropped.
            WebhookEvent.objects.filter(pk=pk).update(status=WebhookEvent.Status.PENDING, next_attempt_at=now)
        transaction.on_commit(lambda: webhook_enqueue(pk, countdown=0))
    return Receipt(event_pk=pk, event_id=event.event_id, status="accepted")


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, default=str)


PROCESS_TASK = "webhooks.tasks.webhook_process_task"


def webhook_enqueue(event_pk: int, *, countdown: float) -> bool:
    """Wake the processing of one stored event; broker down → False, the sweeper finds the row later."""
    return task_send(PROCESS_TASK, args=(event_pk,), countdown=countdown)


def _lock_ttl(event: WebhookEvent) -> int:
    """30 s, doubled for boost and badge purchases (their handlers do more)."""
    custom = (event.payload or {}).get("custom_data") or {}
    base: int = settings.WEBHOOK_LOCK_SECONDS
    return 2 * base if custom.get("type") in EXTENDED_LOCK_TYPES else base


def _marker_key(event: WebhookEvent) -> str:
    return f"webhook:processed:{event.provider}:{event.provider_event_id}"


def _execute(event: WebhookEvent, now: datetime) -> str:
    """Run the handler of a supported type; the caller's transaction holds it."""
    data = event.payload or {}
    custom = data.get("custom_data") or {}
    kind = event.event_type
    if kind.startswith("subscription."):
        return billing_services.subscription_apply(
            event_type=kind, provider=event.provider, occurred_at=event.occurred_at, data=data, now=now
        )
    if kind == "payment.completed":
        payment_id = str(data.get("transaction_id") or event.provider_event_id)
        purchase = custom.get("type")
        if purchase == "credit_pack":
            return card_credit_pack_mint(provider=event.provider, payment_id=payment_id, custom_data=custom, now=now)
        if purchase == "boost_purchase":
            months = int(str(custom.get("months") or "0"))
            member, community = custom.get("member_id"), custom.get("community_id")
            if not (member and community and months > 0):
                return "ignored"
            return billing_services.boost_purchase_record(
                payment_id=payment_id,
                member_id=str(member),
                community_id=str(community),
                months=months,
                amount_paid_cents=int(str(data.get("amount_cents") or "0")),
                now=now,
            )
        if purchase == "badge_purchase":
            member = custom.get("member_id") or custom.get("memberId")
            if not member:
                return "ignored"
            return billing_services.badge_purchase_record(member_id=str(member), payment_id=payment_id, now=now)
        return billing_services.subscription_payment(
            succeeded=True, provider=event.provider, occurred_at=event.occurred_at, data=data, now=now
        )
    if kind == "payment.failed":
        return billing_services.subscription_payment(
            succeeded=False, provider=event.provider, occurred_at=event.occurred_at, data=data, now=now
        )
    raise AssertionError(f"no handler for {kind!r}")  # VALIDATE keeps unknown types out


def webhook_process(*, event_pk: int, now: datetime | None = None) -> str:
    """Process one stored event once; returns the outcome word."""
    now = now or clock.now()
    event = WebhookEvent.objects.filter(pk=event_pk).first()
    if event is None:
        return "missing"
    # LOCK first: everything below runs under it.
    lock = None
    redis_ok = monitor.available()
    if redis_ok:
        try:
            lock = lock_acquire(
                key=f"webhook:lock:{event.pk}", fence_key="webhook:lock:fence", ttl_seconds=_lock_ttl(event)
            )
            monitor.record_success()
        except (redis.RedisError, OSError):
            monitor.record_failure()
            redis_ok = False
        if lock is not None and not lock.acquired:
            rejected("lock_contention")
            return "lock_contention"  # retried later; never reported as done
    if not redis_ok:
        lock_fallbacks_total.labels("webhooks", "postgres_lock").inc()
        if not local_buckets.hit(f"webhook:{event.event_type}", 10, 1.0).allowed:
            return "deferred"  # rate-bounded while Redis is lost; the event stays pending
    try:
        return _process_locked(event, now=now, use_postgres_lock=not redis_ok)
    finally:
        if lock is not None and lock.acquired:
            with contextlib.suppress(redis.RedisError, OSError):  # else it expires by itself
                lock_release(key=lock.key, owner=lock.owner)


def _process_locked(event: WebhookEvent, *, now: datetime, use_postgres_lock: bool) -> str:
    # VERIFY 1: Redis processed marker (skipped when Redis is lost).
    if not use_postgres_lock:
        try:
            if get_redis().exists(_marker_key(event)):
                return "duplicate"
        except (redis.RedisError, OSError):
            use_postgres_lock = True
    try:
        with transaction.atomic(durable=True):
            if use_postgres_lock and not xact_lock(f"webhook:{event.pk}", wait=False):
                rejected("lock_contention")
                return "lock_contention"
            # VERIFY 2: the row, locked, is the truth.
            current = WebhookEvent.objects.select_for_update().get(pk=event.pk)
            if current.status in (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.SKIPPED):
                outcome = "duplicate"
            elif not current.event_type:  # VALIDATE: unknown types are recorded, never guessed
                current.status = WebhookEvent.Status.SKIPPED
                current.processed_at = now
                current.save(update_fields=["status", "processed_at"])
                outcome = "skipped"
            else:
                effect = _execute(current, now)  # EXECUTE
                current.status = WebhookEvent.Status.PROCESSED  # RECORD, same transaction
                current.processed_at = now
                current.last_error = "" if effect != "stale" else "older than the last applied event"
                current.save(update_fields=["status", "processed_at", "last_error"])
                outcome = "processed" if effect != "stale" else "processed_stale"
    except Exception as exc:
        return _record_failure(event, now=now, error=exc)
    if outcome in ("processed", "processed_stale", "skipped", "duplicate") and not use_postgres_lock:
        with contextlib.suppress(redis.RedisError, OSError):  # the row already says processed
            get_redis().set(_marker_key(event), "processed", ex=PROCESSED_MARKER_SECONDS)
    webhook_outcomes_total.labels(event.provider, outcome).inc()
    if outcome in ("processed", "processed_stale", "skipped"):
        webhook_processing_lag_seconds.observe(max(0.0, (clock.now() - event.received_at).total_seconds()))
    return outcome


def _record_failure(event: WebhookEvent, *, now: datetime, error: Exception) -> str:
    attempts = event.attempts + 1
    dead = attempts >= MAX_ATTEMPTS
    delay = 2**attempts
    WebhookEvent.objects.filter(pk=event.pk).exclude(status=WebhookEvent.Status.PROCESSED).update(
        status=WebhookEvent.Status.DEAD if dead else WebhookEvent.Status.FAILED,
        attempts=attempts,
        last_error=f"{type(error).__name__}: {error}"[:1000],
        next_attempt_at=None if dead else now + timedelta(seconds=delay),
    )
    logger.warning("webhook handler failed", extra={"event_pk": event.pk, "attempt": attempts, "dead": dead})
    if not dead:
        webhook_enqueue(event.pk, countdown=delay)
    outcome = "dead" if dead else "failed"
    webhook_outcomes_total.labels(event.provider, outcome).inc()
    return outcome


def webhook_replay(*, event_pk: int, now: datetime, actor: str = "", reason: str = "") -> bool:
    """Admin replay of a dead (or failed) event: back to pending, audited, enqueued on commit."""
    with transaction.atomic():
        event = (
            WebhookEvent.objects.select_for_update()
            .filter(pk=event_pk, status__in=[WebhookEvent.Status.DEAD, WebhookEvent.Status.FAILED])
            .first()
        )
        if event is None:
            return False
        previous = event.status
        WebhookEvent.objects.filter(pk=event_pk).update(
            status=WebhookEvent.Status.PENDING, attempts=0, next_attempt_at=now
        )
        audit_append(
            event_type="webhook_replay",
            payload={"provider": event.provider, "event_id": event.provider_event_id, "from_status": previous},
            correlation_id=f"webhook:{event.provider}:{event.provider_event_id}"[:128],
            now=now,
            actor=actor,
            reason=reason.strip(),
        )
        transaction.on_commit(lambda: webhook_enqueue(event_pk, countdown=0))
    return True


def webhook_sweep(*, now: datetime, grace_seconds: int = 30, batch_size: int = 500) -> int:
    """Re-enqueue pending/failed events whose wake-up was lost (the row is the queue)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE webhooks_webhookevent SET next_attempt_at = %s WHERE id IN ("
            " SELECT id FROM webhooks_webhookevent WHERE status IN ('pending', 'failed')"
            " AND next_attempt_at <= %s ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
            [now + timedelta(seconds=120), now - timedelta(seconds=grace_seconds), batch_size],
        )
        ids = [int(r[0]) for r in cursor.fetchall()]
    for pk in ids:
        webhook_enqueue(pk, countdown=0)
    return len(ids)
