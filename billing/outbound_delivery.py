"""Delivering outbound webhooks: claim a due outbox row, POST it signed, record the answer.

Signed per the Standard Webhooks spec: ``webhook-id`` (the event id, the same on every retry,
so receivers deduplicate), ``webhook-timestamp`` (seconds, this attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per valid secret,
space separated, during a rotation's overlap). A 2xx is delivered; anything else, a timeout or
a refused connection is retried after RETRY_DELAYS (then every 8 hours) until 24 hours after
the event, then ``failed`` (replayable in the admin). No HTTP inside a transaction: the claim
(SKIP LOCKED, pushing ``next_attempt_at`` one lease ahead) commits first, so a worker that dies
mid-POST leaves a row the sweep retries after the lease.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from datetime import datetime, timedelta

import httpx
from django.db import transaction

from billing.models import WebhookDelivery
from billing.services.outbound import DELIVERY_TASK, url_check
from finn import clock
from finn.errors import DomainError
from finn.queue import task_send

logger = logging.getLogger(__name__)
RETRY_DELAYS = [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800]  # seconds before retry n (1-based)
GIVE_UP_AFTER = timedelta(hours=24)
LEASE = timedelta(seconds=60)
TIMEOUT_SECONDS = 10.0


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,`` signature (Standard Webhooks: HMAC-SHA256 over ``id.timestamp.body``)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _claim(delivery_id: int, now: datetime) -> WebhookDelivery | None:
    with transaction.atomic():
        row = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .select_related("endpoint")
            .filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
            .first()
        )
        if row is None:
            return None
        row.next_attempt_at = now + LEASE
        row.attempts += 1
        row.save(update_fields=["next_attempt_at", "attempts"])
        return row


def _record(row: WebhookDelivery, *, now: datetime, status_code: int | None, error: str) -> str:
    ok = status_code is not None and 200 <= status_code < 300
    fields: dict[str, object] = {"last_status_code": status_code, "last_error": error[:500]}
    if ok:
        fields.update(status=WebhookDelivery.Status.DELIVERED, delivered_at=now, next_attempt_at=None)
    else:
        delay = RETRY_DELAYS[min(row.attempts, len(RETRY_DELAYS)) - 1]
        retry_at = now + timedelta(seconds=delay)
        if retry_at > row.created_at + GIVE_UP_AFTER:
            fields.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
        else:
            fields.update(next_attempt_at=retry_at)
    # Only the claim we hold: a replay or a second worker after the lease changes nothing here.
    WebhookDelivery.objects.filter(pk=row.pk, attempts=row.attempts, status=WebhookDelivery.Status.PENDING).update(
        **fields
    )
    return str(fields.get("status", "retry"))


def delivery_attempt(delivery_id: int) -> str:
    """One attempt at one delivery (the Celery task's body); ``skipped`` if not due or claimed elsewhere."""
    now = clock.now()
    row = _claim(delivery_id, now)
    if row is None:
        return "skipped"
    endpoint = row.endpoint
    body = _body(row)
    timestamp = int(now.timestamp())
    secrets = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
        secrets.append(endpoint.previous_secret)
    headers = {
        "content-type": "application/json",
        "user-agent": "finn-webhooks/1",
        "webhook-id": row.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, row.event_id, timestamp, body) for secret in secrets),
    }
    try:
        url_check(endpoint.url)  # again: the name may resolve elsewhere now
        response = httpx.post(endpoint.url, content=body, headers=headers, timeout=TIMEOUT_SECONDS)
        status_code, error = response.status_code, "" if response.is_success else response.text[:200]
    except DomainError as exc:
        status_code, error = None, exc.message
    except httpx.HTTPError as exc:
        status_code, error = None, f"{type(exc).__name__}: {exc}"[:500]
    outcome = _record(row, now=clock.now(), status_code=status_code, error=error)
    logger.info("outbound webhook", extra={"delivery_id": row.pk, "status_code": status_code, "outcome": outcome})
    return outcome


def _body(row: WebhookDelivery) -> bytes:
    """The stored payload as sent: the same bytes on every retry (keys sorted)."""
    return json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()


def deliveries_sweep(*, now: datetime, limit: int = 500) -> int:
    """Send the due deliveries whose wake-up was lost (or whose retry time came): the table is the queue."""
    due = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
    ids = list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    for delivery_id in ids:
        task_send(DELIVERY_TASK, args=(delivery_id,), expires=60)
    return len(ids)
