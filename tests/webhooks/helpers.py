"""Sign webhook bodies the way each provider does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from django.test import Client

PADDLE_SECRET = "pdl_ntfset_test_secret"
STRIPE_SECRET = "whsec_stripe_test_secret"
STANDARD_KEY = b"finn-standard-webhook-key-32byte"
STANDARD_SECRET = "whsec_" + base64.b64encode(STANDARD_KEY).decode()
SECRETS = {
    "PADDLE_WEBHOOK_SECRET": PADDLE_SECRET,
    "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    "STANDARD_WEBHOOK_SECRET": STANDARD_SECRET,
}


def paddle_header(
    raw: bytes, *, ts: int | None = None, secret: str = PADDLE_SECRET, extra: list[str] | None = None
) -> str:
    ts = int(time.time()) if ts is None else ts
    h1 = hmac.new(secret.encode(), f"{ts}:".encode() + raw, hashlib.sha256).hexdigest()
    return ";".join([f"ts={ts}", *(extra or []), f"h1={h1}"])


def stripe_header(
    raw: bytes, *, t: int | None = None, secret: str = STRIPE_SECRET, extra: list[str] | None = None
) -> str:
    t = int(time.time()) if t is None else t
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return ",".join([f"t={t}", *(extra or []), f"v1={v1}"])


def standard_headers(
    raw: bytes, *, msg_id: str = "msg_1", ts: int | None = None, key: bytes = STANDARD_KEY
) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    signature = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + raw, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": f"v1,{signature}"}


def paddle_event(
    event_type: str, data: dict[str, Any], *, event_id: str | None = None, occurred_at: str | None = None
) -> bytes:
    body = {
        "event_id": event_id or f"evt_{uuid.uuid4().hex}",
        "event_type": event_type,
        "occurred_at": occurred_at or datetime.now(UTC).isoformat(),
        "data": data,
    }
    return json.dumps(body).encode()


def post_paddle(client: Client, raw: bytes, **header_args: Any) -> Any:
    return client.post(
        "/api/v1/webhooks/paddle",
        data=raw,
        content_type="application/json",
        headers={"Paddle-Signature": paddle_header(raw, **header_args)},
    )
