"""Idempotency-Key handling shared by every endpoint that takes one.

A request with a key first *claims* a row (INSERT .. ON CONFLICT, one
statement, so two concurrent first requests cannot both win). The winner runs
the operation and stores its response; later requests with the same key and
the same body get that response replayed (``Idempotent-Replayed: true``), a
different body gets 422 ``idempotency_mismatch``, and a request arriving
while the first is still running gets 409 ``request_in_progress`` with
``Retry-After``.

A claim is a lease: if the process handling it dies, another request may take
it over after ``IDEMPOTENCY_LEASE_SECONDS``. That is safe because the
business operations are idempotent on their own as well (for example, a
billing entry's idempotency key is a unique column), so a takeover finds the
first result instead of doing the work twice. Refusals (4xx) and crashes are
not stored: the key is released so the client may retry once it has fixed the
cause (for example, topped up its balance).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from rest_framework.request import Request
from rest_framework.response import Response

from finn import clock
from finn.errors import Conflict, DomainError, InvalidRequest
from finn.models import IdempotencyKey

HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_KEY_FORMAT = re.compile(KEY_PATTERN)


class IdempotencyMismatch(DomainError):
    code = "idempotency_mismatch"
    status = 422


class RequestInProgress(Conflict):
    code = "request_in_progress"


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


def request_fingerprint(*, method: str, path: str, data: Any) -> str:
    canonical = json.dumps(
        {"method": method, "path": path, "data": data}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_CLAIM_SQL = """
INSERT INTO finn_idempotencykey
    (account_id, scope, key, request_hash, status, locked_until, created_at)
VALUES (%s, %s, %s, %s, 'in_progress', %s, %s)
ON CONFLICT (account_id, scope, key) DO UPDATE
    SET locked_until = EXCLUDED.locked_until
    WHERE finn_idempotencykey.status = 'in_progress'
      AND finn_idempotencykey.locked_until < %s
      AND finn_idempotencykey.request_hash = EXCLUDED.request_hash
RETURNING id
"""


def idempotency_claim(
    *, account_id: int, scope: str, key: str, request_hash: str, now: datetime
) -> int | StoredResponse:
    """Claim ``key`` (returns the row id) or return the stored response.

    Raises IdempotencyMismatch or RequestInProgress when the key is taken.
    """
    lease_until = now + timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [account_id, scope, key, request_hash, lease_until, now, now])
        row = cursor.fetchone()
    if row is not None:
        return int(row[0])
    existing = IdempotencyKey.objects.filter(account_id=account_id, scope=scope, key=key).first()
    if existing is None:  # Trimmed between the two statements: try once more.
        return idempotency_claim(account_id=account_id, scope=scope, key=key, request_hash=request_hash, now=now)
    if existing.request_hash != request_hash:
        raise IdempotencyMismatch("this Idempotency-Key was already used with a different request", idempotency_key=key)
    if existing.status == IdempotencyKey.Status.COMPLETED:
        assert existing.response_status is not None
        assert existing.response_body is not None
        return StoredResponse(status=existing.response_status, body=existing.response_body)
    wait = max(1, math.ceil((existing.locked_until - now).total_seconds()))
    error = RequestInProgress("a request with this Idempotency-Key is still in progress", retry_after=wait)
    error.headers["Retry-After"] = str(wait)
    raise error


def idempotency_complete(*, record_id: int, status: int, body: dict[str, Any], now: datetime) -> None:
    IdempotencyKey.objects.filter(pk=record_id).update(
        status=IdempotencyKey.Status.COMPLETED, response_status=status, response_body=body, completed_at=now
    )


def idempotency_release(*, record_id: int) -> None:
    IdempotencyKey.objects.filter(pk=record_id, status=IdempotencyKey.Status.IN_PROGRESS).delete()


def idempotency_key_cleanup(*, now: datetime, batch_size: int = 5000, max_batches: int = 20) -> int:
    """Delete keys older than the retention window, in bounded batches."""
    cutoff = now - timedelta(hours=settings.IDEMPOTENCY_KEY_RETENTION_HOURS)
    deleted = 0
    for _ in range(max_batches):
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM finn_idempotencykey WHERE id IN"
                " (SELECT id FROM finn_idempotencykey WHERE created_at < %s LIMIT %s)",
                [cutoff, batch_size],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch_size:
            break
    return deleted


def idempotency_key_from(request: Request) -> str | None:
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not _KEY_FORMAT.match(raw):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters", reason="invalid_idempotency_key"
        )
    return raw


def run_idempotent(
    request: Request, *, account_id: int, scope: str, handler: Callable[[str | None], Response]
) -> Response:
    """Run ``handler(key)`` at most once per (account, scope, Idempotency-Key)."""
    key = idempotency_key_from(request)
    if key is None:
        return handler(None)
    now = clock.now()
    fingerprint = request_fingerprint(method=request.method or "", path=request.path, data=request.data)
    claim = idempotency_claim(account_id=account_id, scope=scope, key=key, request_hash=fingerprint, now=now)
    if isinstance(claim, StoredResponse):
        return Response(claim.body, status=claim.status, headers={"Idempotent-Replayed": "true"})
    try:
        response = handler(key)
    except BaseException:
        idempotency_release(record_id=claim)
        raise
    if 200 <= response.status_code < 300 and isinstance(response.data, dict):
        idempotency_complete(record_id=claim, status=response.status_code, body=response.data, now=clock.now())
    else:
        idempotency_release(record_id=claim)
    return response
