"""Subscriptions changed by payment-provider webhooks (forward-only, with a grace period).

These run inside the caller's transaction (the webhook pipeline records the event as
processed in the same transaction), so they open none of their own.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.db import transaction

from billing.models import Subscription
from billing.services.ledger import _require_transaction
from finn.audit import audit_append
from finn.redis import get_redis

GRACE_PERIOD = timedelta(hours=24)


_SUBSCRIPTION_STATUSES = {"active", "past_due", "canceled", "trialing", "unpaid"}


def _as_datetime(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _entitlements_invalidate(community_id: str) -> None:
    def drop() -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            get_redis().delete(f"entitlement:{community_id}")

    transaction.on_commit(drop)


def subscription_apply(
    *, event_type: str, provider: str, occurred_at: datetime, data: dict[str, Any], now: datetime
) -> str:
    """Apply a subscription event; older than the last applied one → "stale" (recorded, ignored)."""
    _require_transaction("subscription_apply")
    custom = data.get("custom_data") or {}
    community_id = str(custom.get("community_id") or "")
    subscription_id = data.get("subscription_id")
    subscription = None
    if community_id:
        subscription = Subscription.objects.select_for_update().filter(community_id=community_id).first()
    elif subscription_id:
        subscription = Subscription.objects.select_for_update().filter(payment_subscription_id=subscription_id).first()
        community_id = subscription.community_id if subscription else ""
    if not community_id:
        return "ignored"  # nothing identifies the community: recorded, no effect
    if subscription is not None and subscription.last_event_at and occurred_at < subscription.last_event_at:
        return "stale"
    tier = custom.get("tier")
    if tier not in Subscription.Tier.values:
        tier = None
    if subscription is None:
        subscription = Subscription(community_id=community_id, payment_provider=provider, tier=tier or "basic")
    subscription.payment_provider = provider
    if subscription_id:
        subscription.payment_subscription_id = str(subscription_id)
    if data.get("customer_id"):
        subscription.payment_customer_id = str(data["customer_id"])
    if event_type == "subscription.created":
        subscription.status = Subscription.Status.TRIALING
        subscription.tier = tier or subscription.tier
    elif event_type == "subscription.activated":
        subscription.status = Subscription.Status.ACTIVE
        subscription.grace_until = None
    elif event_type == "subscription.updated":
        status = str(data.get("status") or "")
        if status in _SUBSCRIPTION_STATUSES:
            subscription.status = status
        subscription.tier = tier or subscription.tier
        if subscription.status == Subscription.Status.ACTIVE:
            subscription.grace_until = None
    elif event_type == "subscription.canceled":
        subscription.status = Subscription.Status.CANCELED
        subscription.tier = Subscription.Tier.STARTER
        subscription.grace_until = None
    subscription.current_period_start = _as_datetime(data.get("period_start")) or subscription.current_period_start
    subscription.current_period_end = _as_datetime(data.get("period_end")) or subscription.current_period_end
    subscription.last_event_at = occurred_at
    subscription.updated_at = now
    subscription.save()
    audit_append(
        event_type=event_type.replace(".", "_"),
        payload={
            "community_id": community_id,
            "tier": subscription.tier,
            "status": subscription.status,
            "provider": provider,
        },
        correlation_id=str(subscription_id or community_id),
        now=now,
        actor=provider,
    )
    _entitlements_invalidate(community_id)
    return "applied"


def subscription_payment(
    *, succeeded: bool, provider: str, occurred_at: datetime, data: dict[str, Any], now: datetime
) -> str:
    """A subscription payment: success re-activates; failure starts a 24 h grace period."""
    _require_transaction("subscription_payment")
    subscription_id = data.get("subscription_id")
    if not subscription_id:
        return "ignored"
    subscription = Subscription.objects.select_for_update().filter(payment_subscription_id=subscription_id).first()
    if subscription is None:
        return "ignored"
    if subscription.last_event_at and occurred_at < subscription.last_event_at:
        return "stale"
    payload: dict[str, Any] = {"community_id": subscription.community_id, "transaction_id": data.get("transaction_id")}
    if succeeded:
        subscription.status = Subscription.Status.ACTIVE
        subscription.grace_until = None
        events = ["payment_succeeded"]
    else:
        subscription.status = Subscription.Status.PAST_DUE
        subscription.grace_until = now + GRACE_PERIOD
        payload["grace_until"] = subscription.grace_until.isoformat()
        events = ["payment_failed", "grace_period_started"]
    subscription.last_event_at = occurred_at
    subscription.updated_at = now
    subscription.save()
    for event in events:
        audit_append(event_type=event, payload=payload, correlation_id=str(subscription_id), now=now, actor=provider)
    _entitlements_invalidate(subscription.community_id)
    return "applied"
