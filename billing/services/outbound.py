"""Outbound webhooks to customers: endpoints, and the outbox rows their events write.

An event is recorded by ``outbound_events_record`` inside the transaction that makes it true
(a hold expiring, an entry voided, a credit mint, a credit note), so the outbox is exactly as
durable as the money: one row per (endpoint, event) in ``billing_webhookdelivery``, which is
also the delivery queue (billing/outbound_delivery.py). One INSERT … SELECT per call: an
account without endpoints costs one probe of the partial index on active endpoints.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from ulid import ULID

from billing.errors import AccountNotFound
from billing.models import OUTBOUND_EVENT_TYPES, Account, WebhookDelivery, WebhookEndpoint
from finn.audit import audit_append
from finn.errors import InvalidRequest, NotFound
from finn.queue import task_enqueue

DELIVERY_TASK = "billing.tasks.outbound_delivery_task"
SECRET_OVERLAP = timedelta(hours=24)  # a rotated-out secret keeps signing this long
ENQUEUE_AT_ONCE = 100  # more deliveries from one transaction wait for the sweep (a few seconds)
MAX_ENDPOINTS_PER_ACCOUNT = 10


@dataclass(frozen=True)
class OutboundEvent:
    account_id: int
    event_type: str
    data: dict[str, Any]


def secret_new() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def url_check(url: str) -> None:
    """Refuse what would let a customer aim finn at its own network (SSRF), at registration and per delivery.

    https only, and every address the host resolves to must be public — unless
    OUTBOUND_WEBHOOKS_ALLOW_PRIVATE (tests, a private deployment), which also allows http.
    """
    parts = urlsplit(url)
    allow_private = settings.OUTBOUND_WEBHOOKS_ALLOW_PRIVATE
    if parts.scheme not in (("https", "http") if allow_private else ("https",)) or not parts.hostname:
        raise InvalidRequest("the endpoint url must be https://host/…", reason="endpoint_url")
    if parts.username or parts.password:
        raise InvalidRequest("the endpoint url may not carry credentials", reason="endpoint_url")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise InvalidRequest(f"the endpoint host {parts.hostname!r} does not resolve", reason="endpoint_url") from None
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_global:
            raise InvalidRequest("the endpoint resolves to a private address", reason="endpoint_url")


def _event_types(raw: Sequence[str]) -> list[str]:
    chosen = sorted(set(raw))
    unknown = [t for t in chosen if t not in OUTBOUND_EVENT_TYPES]
    if not chosen or unknown:
        raise InvalidRequest(
            f"event_types must be some of {', '.join(OUTBOUND_EVENT_TYPES)}", reason="event_types", unknown=unknown
        )
    return chosen


@transaction.atomic(durable=True)
def endpoint_create(
    *, account_id: int, url: str, event_types: Sequence[str], now: datetime, actor: str
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; answers it with its secret (shown this once). Audited."""
    url_check(url)
    types = _event_types(event_types)
    if not Account.objects.filter(pk=account_id).exists():
        raise AccountNotFound(f"account {account_id} not found")
    if WebhookEndpoint.objects.filter(account_id=account_id, active=True).count() >= MAX_ENDPOINTS_PER_ACCOUNT:
        raise InvalidRequest(f"an account has at most {MAX_ENDPOINTS_PER_ACCOUNT} endpoints", reason="endpoints")
    secret = secret_new()
    endpoint = WebhookEndpoint.objects.create(
        account_id=account_id, url=url, event_types=types, secret=secret, created_at=now
    )
    audit_append(
        event_type="webhook_endpoint_created",
        payload={"endpoint_id": str(endpoint.pk), "url": url, "event_types": types},
        correlation_id=f"endpoint:{endpoint.pk}",
        now=now,
        account_id=account_id,
        actor=actor,
    )
    return endpoint, secret


def _endpoint_locked(endpoint_id: int, account_id: int | None) -> WebhookEndpoint:
    rows = WebhookEndpoint.objects.select_for_update().filter(pk=endpoint_id, active=True)
    if account_id is not None:
        rows = rows.filter(account_id=account_id)
    endpoint = rows.first()
    if endpoint is None:
        raise NotFound(f"webhook endpoint {endpoint_id} not found")
    return endpoint


@transaction.atomic(durable=True)
def endpoint_secret_rotate(*, endpoint_id: int, account_id: int | None, now: datetime, actor: str) -> str:
    """A new secret (shown once); the old one still signs, beside it, for SECRET_OVERLAP. Audited."""
    endpoint = _endpoint_locked(endpoint_id, account_id)
    secret = secret_new()
    endpoint.previous_secret, endpoint.previous_secret_until = endpoint.secret, now + SECRET_OVERLAP
    endpoint.secret = secret
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_until"])
    audit_append(
        event_type="webhook_endpoint_secret_rotated",
        payload={"endpoint_id": str(endpoint.pk), "previous_until": endpoint.previous_secret_until.isoformat()},
        correlation_id=f"endpoint:{endpoint.pk}",
        now=now,
        account_id=endpoint.account_id,
        actor=actor,
    )
    return secret


@transaction.atomic(durable=True)
def endpoint_disable(*, endpoint_id: int, account_id: int | None, now: datetime, actor: str) -> None:
    endpoint = _endpoint_locked(endpoint_id, account_id)
    endpoint.active = False
    endpoint.save(update_fields=["active"])
    WebhookDelivery.objects.filter(endpoint=endpoint, status=WebhookDelivery.Status.PENDING).update(
        status=WebhookDelivery.Status.FAILED, last_error="endpoint disabled", next_attempt_at=None
    )
    audit_append(
        event_type="webhook_endpoint_disabled",
        payload={"endpoint_id": str(endpoint.pk)},
        correlation_id=f"endpoint:{endpoint.pk}",
        now=now,
        account_id=endpoint.account_id,
        actor=actor,
    )


def outbound_events_record(events: Sequence[OutboundEvent], *, now: datetime) -> int:
    """Write the outbox rows of ``events`` for every active endpoint subscribed (caller's transaction).

    Deliveries are sent once the transaction commits (up to ENQUEUE_AT_ONCE at once; the sweep
    finds the rest). Returns how many rows were written.
    """
    if not events:
        return 0
    if not connection.in_atomic_block:
        raise RuntimeError("outbound_events_record runs inside the event's transaction")
    ids = [f"msg_{ULID()}" for _ in events]
    bodies = [
        json.dumps({"type": e.event_type, "timestamp": now.isoformat(), "data": {**e.data, "account_id": e.account_id}})
        for e in events
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_webhookdelivery (endpoint_id, event_id, event_type, payload, status, attempts,"
            " next_attempt_at, last_error, created_at)"
            " SELECT w.id, v.event_id, v.event_type, v.payload::jsonb, 'pending', 0, %s, '', %s"
            " FROM unnest(%s::bigint[], %s::varchar[], %s::varchar[], %s::text[])"
            " AS v(account_id, event_id, event_type, payload)"
            " JOIN billing_webhookendpoint w ON w.account_id = v.account_id AND w.active"
            " AND v.event_type = ANY(w.event_types) RETURNING id",
            [now, now, [e.account_id for e in events], ids, [e.event_type for e in events], bodies],
        )
        written = [row[0] for row in cursor.fetchall()]
    for delivery_id in written[:ENQUEUE_AT_ONCE]:
        task_enqueue(DELIVERY_TASK, args=(delivery_id,))
    return len(written)


def outbound_event_after_commit(event: OutboundEvent, *, now: datetime) -> None:
    """For an event decided by a transaction that must stay one statement (the commit's low balance):
    its outbox row is written right after that transaction commits, in a transaction of its own."""

    def record() -> None:
        with transaction.atomic():
            outbound_events_record([event], now=now)

    transaction.on_commit(record)


@transaction.atomic(durable=True)
def deliveries_replay(*, delivery_ids: Sequence[int], now: datetime, actor: str, reason: str) -> int:
    """Send deliveries again (finance staff in the admin): pending, due now, attempts kept. Audited."""
    rows = WebhookDelivery.objects.select_for_update().filter(pk__in=list(delivery_ids))
    replayed = [row.pk for row in rows]
    WebhookDelivery.objects.filter(pk__in=replayed).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=now, delivered_at=None
    )
    audit_append(
        event_type="webhook_delivery_replay",
        payload={"delivery_ids": [str(pk) for pk in replayed]},
        correlation_id=f"delivery-replay:{now.isoformat()}",
        now=now,
        actor=actor,
        reason=reason,
    )
    for delivery_id in replayed[:ENQUEUE_AT_ONCE]:
        task_enqueue(DELIVERY_TASK, args=(delivery_id,))
    return len(replayed)
