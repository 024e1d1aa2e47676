"""Provider adapters: signature verification (pure functions on the raw bytes)
and normalization of each provider's event into finn's event shape.

Normalized types: subscription.created|activated|updated|canceled,
payment.completed|failed. A provider type the mapping does not list
normalizes to "" and is recorded as skipped: it never falls back to another
handler (the original mapped unknown Paddle types to subscription.updated).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from finn import clock


class SignatureError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _missing() -> SignatureError:
    return SignatureError("signature_missing", "the signature header is missing")


def _invalid(message: str = "the signature does not match the body") -> SignatureError:
    return SignatureError("signature_invalid", message)


def _check_time(timestamp: str, now: float, tolerance: int) -> None:
    try:
        moment = int(timestamp)
    except ValueError:
        raise _invalid("the signature timestamp is not a number") from None
    if abs(now - moment) > tolerance:
        raise SignatureError("timestamp_out_of_tolerance", "the signature timestamp is too old or in the future")


def _hmac_hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _pairs(header: str, separator: str) -> list[tuple[str, str]]:
    pairs = []
    for part in header.split(separator):
        key, sep, value = part.strip().partition("=")
        if not sep or not key or not value:
            raise _invalid("the signature header is malformed")
        pairs.append((key.strip(), value.strip()))
    return pairs


def verify_paddle(raw: bytes, header: str | None, secret: str, *, now: float, tolerance: int) -> None:
    """``Paddle-Signature: ts=<unix>;h1=<hex>[;h1=…]`` over ``"{ts}:{body}"``; any h1 may match."""
    if not header:
        raise _missing()
    pairs = _pairs(header, ";")
    timestamps = [v for k, v in pairs if k == "ts"]
    signatures = [v.lower() for k, v in pairs if k == "h1"]
    if len(timestamps) != 1 or not signatures:
        raise _invalid("the signature header is malformed")
    expected = _hmac_hex(secret.encode(), timestamps[0].encode() + b":" + raw)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise _invalid()
    _check_time(timestamps[0], now, tolerance)


def verify_stripe(raw: bytes, header: str | None, secret: str, *, now: float, tolerance: int) -> None:
    """``Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`` over ``"{t}.{body}"``."""
    if not header:
        raise _missing()
    pairs = _pairs(header, ",")
    timestamps = [v for k, v in pairs if k == "t"]
    signatures = [v.lower() for k, v in pairs if k == "v1"]
    if len(timestamps) != 1 or not signatures:
        raise _invalid("the signature header is malformed")
    expected = _hmac_hex(secret.encode(), timestamps[0].encode() + b"." + raw)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise _invalid()
    _check_time(timestamps[0], now, tolerance)


def verify_standard(
    raw: bytes,
    *,
    webhook_id: str | None,
    timestamp: str | None,
    header: str | None,
    secret: str,
    now: float,
    tolerance: int,
) -> None:
    """Standard Webhooks: ``v1,<base64>`` (space separated) over ``"{id}.{timestamp}.{body}"``."""
    if not header or not webhook_id or not timestamp:
        raise _missing()
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature_invalid", "the configured secret is not base64") from None
    expected = base64.b64encode(
        hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    ).decode()
    candidates = []
    for part in header.split(" "):
        version, sep, value = part.partition(",")
        if not sep:
            raise _invalid("the signature header is malformed")
        if version == "v1":
            candidates.append(value)
    if not candidates or not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise _invalid()
    _check_time(timestamp, now, tolerance)


# --- normalization ----------------------------------------------------------------


@dataclass(frozen=True)
class NormalizedEvent:
    event_id: str
    raw_type: str
    event_type: str  # "" when the mapping does not know the provider type
    occurred_at: datetime
    data: dict[str, Any]


class InvalidEvent(ValueError):
    pass


PADDLE_TYPES = {
    "subscription.created": "subscription.created",
    "subscription.activated": "subscription.activated",
    "subscription.updated": "subscription.updated",
    "subscription.canceled": "subscription.canceled",
    "transaction.completed": "payment.completed",
    "transaction.payment_failed": "payment.failed",
}

STRIPE_TYPES = {
    "customer.subscription.created": "subscription.created",
    "customer.subscription.updated": "subscription.updated",
    "customer.subscription.deleted": "subscription.canceled",
    "invoice.paid": "payment.completed",
    "invoice.payment_failed": "payment.failed",
    # checkout.session.completed: a one-off purchase or a new subscription, see below
}

NORMALIZED_TYPES = frozenset(PADDLE_TYPES.values())
ONE_OFF_PURCHASES = frozenset({"credit_pack", "boost_purchase", "badge_purchase"})


def _require(body: Any, *keys: str) -> None:
    if not isinstance(body, dict) or any(k not in body for k in keys):
        raise InvalidEvent(f"the event needs {', '.join(keys)}")


def _iso(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"not a timestamp: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def normalize_paddle(body: Any) -> NormalizedEvent:
    _require(body, "event_id", "event_type", "occurred_at", "data")
    data = body["data"] if isinstance(body["data"], dict) else {}
    raw_type = str(body["event_type"])
    is_transaction = raw_type.startswith("transaction.")
    period = data.get("current_billing_period") or {}
    totals = ((data.get("details") or {}).get("totals") or {}) if isinstance(data.get("details"), dict) else {}
    return NormalizedEvent(
        event_id=str(body["event_id"]),
        raw_type=raw_type,
        event_type=PADDLE_TYPES.get(raw_type, ""),
        occurred_at=_iso(body["occurred_at"]) or clock.now(),
        data={
            "subscription_id": data.get("subscription_id") if is_transaction else data.get("id"),
            "transaction_id": data.get("id") if is_transaction else None,
            "customer_id": data.get("customer_id"),
            "status": data.get("status"),
            "custom_data": data.get("custom_data") or {},
            "period_start": period.get("starts_at") if isinstance(period, dict) else None,
            "period_end": period.get("ends_at") if isinstance(period, dict) else None,
            "amount_cents": totals.get("total"),
        },
    )


def normalize_stripe(body: Any) -> NormalizedEvent:
    _require(body, "id", "type", "created", "data")
    obj = (body["data"] or {}).get("object") if isinstance(body["data"], dict) else None
    obj = obj if isinstance(obj, dict) else {}
    raw_type = str(body["type"])
    custom = obj.get("metadata") or {}
    event_type = STRIPE_TYPES.get(raw_type, "")
    if raw_type == "checkout.session.completed":
        event_type = "payment.completed" if custom.get("type") in ONE_OFF_PURCHASES else "subscription.activated"
    is_subscription_object = raw_type.startswith("customer.subscription.")
    return NormalizedEvent(
        event_id=str(body["id"]),
        raw_type=raw_type,
        event_type=event_type,
        occurred_at=_iso(body["created"]) or clock.now(),
        data={
            "subscription_id": obj.get("id") if is_subscription_object else obj.get("subscription"),
            "transaction_id": None if is_subscription_object else obj.get("id"),
            "customer_id": obj.get("customer"),
            "status": obj.get("status"),
            "custom_data": custom,
            "period_start": obj.get("current_period_start"),
            "period_end": obj.get("current_period_end"),
            "amount_cents": obj.get("amount_total") or obj.get("amount_paid"),
        },
    )


def normalize_standard(
    body: Any, *, webhook_id: str | None = None, webhook_timestamp: str | None = None
) -> NormalizedEvent:
    """A Standard Webhooks message: ``{"type", "timestamp", "data"}``, its id in ``webhook-id``.

    Per the spec the id and the send time travel in the headers (the signature covers both);
    the body's ``timestamp`` (ISO 8601) is when the event happened, falling back to the
    header's. Bodies written before finn followed the spec (``id``, ``occurred_at``) are still
    read. Types finn does not map are stored and acknowledged (then skipped), never refused.
    """
    if not isinstance(body, dict) or not isinstance(body.get("type"), str) or not isinstance(body.get("data"), dict):
        raise InvalidEvent('a Standard Webhooks body needs "type" (a string) and "data" (an object)')
    event_id = webhook_id or body.get("id")
    if not event_id:
        raise InvalidEvent("the message needs a webhook-id")
    data = body["data"]
    raw_type = body["type"][:128]  # the stored column's width
    occurred_at = _iso(body.get("timestamp")) or _iso(body.get("occurred_at"))
    if occurred_at is None and webhook_timestamp and webhook_timestamp.isdigit():
        occurred_at = datetime.fromtimestamp(int(webhook_timestamp), tz=UTC)
    return NormalizedEvent(
        event_id=str(event_id)[:255],
        raw_type=raw_type,
        event_type=raw_type if raw_type in NORMALIZED_TYPES else "",
        occurred_at=occurred_at or clock.now(),
        data={
            "subscription_id": data.get("subscription_id"),
            "transaction_id": data.get("transaction_id"),
            "customer_id": data.get("customer_id"),
            "status": data.get("status"),
            "custom_data": data.get("custom_data") or {},
            "period_start": data.get("current_period_start"),
            "period_end": data.get("current_period_end"),
            "amount_cents": data.get("amount_cents"),
        },
    )
